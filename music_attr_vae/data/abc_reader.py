"""ABC tune books and folk-rnn token tunes -> NoteSequence (the folk subset of ABC).

What is read
------------
ABC 2.1 as tune books write it.  Headers ``X: T: M: L: K: P: U:`` (``K:`` ends
the header; a missing ``X:`` or ``T:`` is not fatal); field lines and inline
fields ``[K:] [M:] [L:] [P:] [V:] [U:]`` in the body; notes with accidentals
(``^ ^^ _ __ =``: an accidental holds for that letter *in that octave* until
the bar line, so ``^c C c'`` plays C# C C; a note tied over the bar line keeps
it), octave marks, lengths (``A2 A/2 A/ A// A3/2 A3//``), rests ``z x``,
multi-measure rests ``Z X``, ties ``-`` (merged into one longer note), broken
rhythm ``> < >> <<``, tuplets ``(3`` and ``(p:q:r``, chords ``[ceg]`` (the top
note is kept; the chord lasts as long as its first note), repeats ``|: :| ::``
and variant endings ``[1 [2 |1 :|2 [1,3 [1-3`` (expanded into played order),
the invisible bar ``[|]`` (a plain bar, not a section start).  A line ending in
``\\`` continues on the next line (also in the header, and also when the
break splits a bar line such as ``||\\`` + ``:``).
Keys: ``K:D K:Bb K:F#m K:Ador K:Emin K:Gmix K:C lydian K:HP K:Hp K:none``, clef
words (``K:bass`` changes nothing) and explicit accidentals with or without a
space (``K:D =c``, ``K:Dmix=c``, ``K:Dmix ^c``; ``K:D exp _b ^f`` gives exactly
those).  ``HP``/``Hp`` both play F# and C#.

What is dropped (no melody): chord symbols and annotations ``"..."``,
decorations in every ABC 2.1 form (``!trill!``, the old ``+trill+``, the
shortcuts ``~ .`` and the redefinable letters ``H``-``W`` ``h``-``w``, and any
other symbol that a ``U:`` line defines as a decoration), grace notes ``{..}``,
slurs, lyrics (``w: W:``), comments ``%``, spacers ``y``, other field lines.
With several voices (``V:``) only the first voice is read.

Timing (see BUILD_NOTES.md, "NoteSequences from readers")
---------------------------------------------------------
Durations are musical: one tempo of 120 qpm, so a quarter note lasts 0.5 s.
The default unit length follows the ABC standard (1/16 when the header meter
is below 0.75, else 1/8).  Bars are kept on the barline grid: a pickup at the
start of the tune (or just after a meter change, a section start ``|:``/``||``
or a part label) is right-aligned so that the first full bar starts on beat 1;
a short bar that the next one does not complete is padded with silence up to
the next barline; a meter change puts a time signature at the start of its bar.

Repeats and parts
-----------------
An end repeat without a start repeat goes back to the most recent section start:
the tune start, a double bar ``||`` (when no ``|:`` is open), the end of the
previous repeat, or a part label ``P:``.  The number of passes is the highest
variant-ending number (2 without endings).  The last variant ending runs until
the next double bar, repeat sign or part label.  A ``P:`` field in the header
(e.g. ``P:AABB`` or ``P:(AB)2C``) gives the play order of the parts labelled by
body ``P:`` lines; without one the tune is played straight through.  The
non-standard ``Y:`` play-order hints of the Nottingham files are ignored.

Skip reasons (``SkipTune.reason``)
----------------------------------
``no_key_field``   no ``K:`` line
``bad_header``     a line before ``K:`` that is not a field (e.g. music before the key)
``bad_key``        a ``K:`` value that names no key
``unsupported_meter``  ``M:none`` or a meter that cannot be read (raised after the
                   whole tune is read, so a syntax error in such a tune is counted as such)
``bad_length``     an ``L:`` value that cannot be read
``bad_syntax``     a character that is not ABC music (e.g. a stray ``]``)
``bad_duration``   a zero-length note, or a broken rhythm with nothing before it
``bad_tuplet``     ``(0``, ``(p:0`` and the like
``polyphonic``     a voice overlay ``&``
``pitch_out_of_range``  a note outside MIDI 0..127
``unbalanced_repeat``  repeats that do not resolve (runaway expansion)
``too_long``       more than ``MAX_NOTES`` notes after expansion
``no_notes``       no pitched note at all
``empty_tune``     a folk-rnn tune without music tokens
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

from note_seq.protobuf import music_pb2

QPM = 120.0
SECONDS_PER_BEAT = 60.0 / QPM
VELOCITY = 80
MAX_NOTES = 20000
MAX_PART_ORDER = 64  # labels in a header P: play order (and characters read from it)
_EPS = 1e-6


class SkipTune(Exception):
    """A tune the reader cannot turn into a melody; counted under ``reason`` by the caller."""

    def __init__(self, reason: str, detail: str = ""):
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # keep both fields across process boundaries
        return (SkipTune, (self.reason, self.detail))


# ----------------------------------------------------------------------------- tune books

_X_LINE = re.compile(r"^X:", re.M)
_K_LINE = re.compile(r"^K:", re.M)
_BOOK_HEADER_FIELD = re.compile(r"^[ML]:.*$", re.M)
_BLOCK_SPLIT = re.compile(r"\n[ \t]*\n")
_STARTS_WITH_FIELD = re.compile(r"^(?:%[^\n]*\n)*[A-Za-z]:")


def _is_headless_tune(block: str) -> bool:
    """A block of lines that is a tune without its ``X:`` line: fields first, a ``K:`` line, music."""
    return bool(_STARTS_WITH_FIELD.match(block) and _K_LINE.search(block))


def _chunk_tunes(chunk: str) -> List[str]:
    """Tunes in the text from one ``X:`` line to the next (or before the first one).

    After the block holding the tune's ``K:`` line, a block (after a blank line)
    that starts with fields and has its own ``K:`` line is a further tune whose
    ``X:`` line is missing; other blocks stay with the tune (the reader stops
    at the blank line after the music).
    """
    tunes: List[str] = []
    current: List[str] = []
    has_key = False
    for block in _BLOCK_SPLIT.split(chunk):
        if has_key and _is_headless_tune(block.strip()):
            tunes.append("\n\n".join(current).strip())
            current, has_key = [], False
        current.append(block)
        has_key = has_key or bool(_K_LINE.search(block))
    if current and "\n\n".join(current).strip():
        tunes.append("\n\n".join(current).strip())
    return tunes


def split_abc_book(text: str) -> List[str]:
    """Split an ABC file into tune texts, each starting with its ``X:`` line (when it has one).

    ``M:``/``L:`` fields of a file header (text before the first ``X:``) are the
    book's defaults: they are copied right after each tune's first line, where
    the tune's own fields still override them.  A missing ``X:`` is not fatal:
    a blank-line separated block of fields with a ``K:`` line and music (before
    the first ``X:``, or after a tune) is a tune of its own.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    starts = [m.start() for m in _X_LINE.finditer(text)]
    head = text[: starts[0]] if starts else text
    defaults: List[str] = []
    tunes: List[str] = []
    for block in _BLOCK_SPLIT.split(head):
        if _is_headless_tune(block.strip()):
            tunes.extend(_chunk_tunes(block.strip()))
        elif not tunes:
            defaults.extend(_BOOK_HEADER_FIELD.findall(block))
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        tunes.extend(_chunk_tunes(text[start:end]))
    if defaults:
        tunes = [_with_defaults(tune, defaults) for tune in tunes]
    return tunes


def _with_defaults(tune: str, defaults: List[str]) -> str:
    first_nl = tune.find("\n")
    if first_nl < 0:
        first_nl = len(tune)
    return tune[:first_nl] + "\n" + "\n".join(defaults) + tune[first_nl:]


# ----------------------------------------------------------------------------- header values

Meter = Tuple[int, int]
_METER_RE = re.compile(r"^\s*\(?\s*(\d+(?:\s*\+\s*\d+)*)\s*\)?\s*/\s*(\d+)\s*$")


def parse_meter(value: str) -> Meter:
    """``4/4``, ``C`` (4/4), ``C|`` (2/2), ``2+3/8`` (5/8) -> (numerator, denominator)."""
    v = value.strip()
    if v == "C":
        return (4, 4)
    if v == "C|":
        return (2, 2)
    m = _METER_RE.match(v)
    if not m:
        raise SkipTune("unsupported_meter", f"M:{value.strip()}")
    if len(v) > 40:
        raise SkipTune("unsupported_meter", f"M:{v[:40]}...")
    num = sum(int(x) for x in m.group(1).split("+"))
    den = int(m.group(2))
    if num <= 0 or den <= 0 or num > 64 or den > 64:
        raise SkipTune("unsupported_meter", f"M:{value.strip()}")
    return (num, den)


_LENGTH_RE = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d+))?\s*$")


def parse_unit_length(value: str) -> float:
    """``L:1/8`` -> the unit note length in quarter beats (0.5)."""
    m = _LENGTH_RE.match(value)
    if not m or len(value) > 20:
        raise SkipTune("bad_length", f"L:{value.strip()}")
    num, den = int(m.group(1)), int(m.group(2) or 1)
    if num <= 0 or den <= 0:
        raise SkipTune("bad_length", f"L:{value.strip()}")
    return 4.0 * num / den


def default_unit_length(meter: Optional[Meter]) -> float:
    """The ABC standard default: 1/16 when the meter is below 3/4, else 1/8 (in quarter beats)."""
    if meter is not None and meter[0] / meter[1] < 0.75:
        return 0.25
    return 0.5


_LETTERS = "cdefgab"
_SEMITONE = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_LETTER_FIFTHS = {"c": 0, "d": 2, "e": 4, "f": -1, "g": 1, "a": 3, "b": 5}
_SHARP_ORDER = "fcgdaeb"
_MODE_SHIFT = {"maj": 0, "ion": 0, "mix": -1, "dor": -2, "aeo": -3, "min": -3, "m": -3, "phr": -4, "loc": -5, "lyd": 1}
_KEY_RE = re.compile(r"^\s*(?:(?P<tonic>[A-Ga-g])(?P<acc>[#b]?)(?:\s*(?P<mode>[A-Za-z]+))?|(?P<hp>HP|Hp)|(?P<none>none))(?=[\s=^_]|$)")
_KEY_ACC_WORD = re.compile(r"(?:(?:\^\^|\^|__|_|=)[A-Ga-g])+")
_KEY_ACC_RE = re.compile(r"(\^\^|\^|__|_|=)([A-Ga-g])")
_CLEF_WORDS = {"treble", "bass", "alto", "tenor", "perc", "clef", "exp", "none", "octave", "transpose", "middle"}
_ACC_VALUE = {"^": 1, "^^": 2, "_": -1, "__": -2, "=": 0}


def _mode_fifths(tonic: str, acc: str, mode: str, value: str) -> int:
    """Sharps (> 0) or flats (< 0) of a tonic and mode; SkipTune('bad_key') outside 7 either way."""
    mode = mode.lower()
    shift = -3 if mode == "m" else (_MODE_SHIFT[mode[:3]] if mode else 0)
    fifths = _LETTER_FIFTHS[tonic.lower()] + {"#": 7, "b": -7, "": 0}[acc] + shift
    if not -7 <= fifths <= 7:
        raise SkipTune("bad_key", f"K:{value}")
    return fifths


def _signature(fifths: int) -> Dict[str, int]:
    amap = {c: 0 for c in _LETTERS}
    for c in _SHARP_ORDER[:max(fifths, 0)]:
        amap[c] = 1
    for c in _SHARP_ORDER[::-1][: max(-fifths, 0)]:
        amap[c] = -1
    return amap


def parse_key(value: str) -> Optional[Dict[str, int]]:
    """A ``K:`` value -> {letter: alteration} for the 7 letters, or None for "no key change".

    ``K:`` with only a clef (``K:bass``) changes nothing; ``K:none`` and an empty
    ``K:`` mean no accidentals.  Explicit accidentals follow the key, with or
    without a space (``K:D =c``, ``K:Dmix=c``, ``K:D ^c_b``); after ``exp`` they
    are the whole signature (``K:D exp _b ^f``).  Raises SkipTune('bad_key') for
    anything else that names no key.
    """
    v = value.split("%", 1)[0].strip()
    if not v:
        return {c: 0 for c in _LETTERS}
    first = v.split()[0].split("=")[0].lower()
    m = None if first in _CLEF_WORDS - {"none"} else _KEY_RE.match(v)
    if m is None:
        if first in _CLEF_WORDS or first.startswith(("^", "_", "=")):
            amap = None
            rest = v
        else:
            raise SkipTune("bad_key", f"K:{v}")
    else:
        rest = v[m.end():]
        if m.group("hp"):
            amap = {c: 0 for c in _LETTERS}
            amap["f"] = amap["c"] = 1
        elif m.group("none"):
            amap = {c: 0 for c in _LETTERS}
        else:
            mode = m.group("mode") or ""
            low = mode.lower()
            if low and low != "m" and low[:3] not in _MODE_SHIFT:
                if low not in _CLEF_WORDS:
                    raise SkipTune("bad_key", f"K:{v}")
                rest = v[m.start("mode"):]  # "K:D exp ...", "K:G treble": not a mode
                mode = ""
            amap = _signature(_mode_fifths(m.group("tonic"), m.group("acc"), mode, v))
    words = rest.split()
    extra = [pair for w in words if _KEY_ACC_WORD.fullmatch(w) for pair in _KEY_ACC_RE.findall(w)]
    if extra:
        if amap is None or "exp" in words:
            amap = {c: 0 for c in _LETTERS}
        for acc, letter in extra:
            amap[letter.lower()] = _ACC_VALUE[acc]
    return amap


def parse_part_order(value: str) -> List[str]:
    """Header ``P:`` play order -> list of part labels: ``AABB``, ``A2B``, ``(AB)2C``, ``A.B.C``."""
    pos = 0
    text = re.sub(r"[^A-Z0-9()]", "", value)[:MAX_PART_ORDER]

    def seq() -> List[str]:
        nonlocal pos
        out: List[str] = []
        while pos < len(text) and text[pos] != ")":
            ch = text[pos]
            pos += 1
            if ch == "(":
                item = seq()
                if pos < len(text) and text[pos] == ")":
                    pos += 1
            elif ch.isalpha():
                item = [ch]
            else:
                continue  # a stray digit
            m = re.match(r"\d+", text[pos:])
            times = 1
            if m:
                times = min(int(m.group()[:3]), 16)
                pos += m.end()
            out.extend(item * times)
            del out[MAX_PART_ORDER:]
        return out

    result: List[str] = []
    while pos < len(text) and len(result) < MAX_PART_ORDER:
        result.extend(seq())
        pos += 1  # skip an unmatched ')'
    return result[:MAX_PART_ORDER]


# ----------------------------------------------------------------------------- tokenizer

_LEN = r"(\d+)?(/+)?(\d+)?"
_TOKEN_RE = re.compile(
    r"(?P<note>(\^\^|\^|__|_|=)?([A-Ga-g])([,']*)" + _LEN + r")"  # groups 2..7
    r"|(?P<rest>([zx])" + _LEN + r")"  # 9..12
    r"|(?P<bar>(:*(?:\[\||\|)[|\]:]*|::+)(\d+(?:[,\-]\d+)*)?)"  # 14, 15
    r"|(?P<ending>\[(\d+(?:[,\-]\d+)*))"  # 17
    r"|(?P<field>\[([A-Za-z]):([^\]]*)\])"  # 19, 20
    r"|(?P<chord>\[([^\]\[|\"]*)\]" + _LEN + r")"  # 22, 23..25
    r"|(?P<tuplet>\((\d+)(?::(\d*))?(?::(\d*))?)"  # 27..29
    r"|(?P<broken>[<>]+)"
    r"|(?P<tie>-)"
    r"|(?P<mrest>[ZX](\d+)?)"  # 33
    r"|(?P<skip>\"[^\"]*\"?|\{[^}]*\}?|![^!\s]*!|\+[^+\s]*\+|[ \t\\~.H-Wh-w)`$y]+|[(!])"
    r"|(?P<overlay>&)"
    r"|(?P<other>.)"
)
_CHORD_NOTE_RE = re.compile(r"(\^\^|\^|__|_|=)?([A-Ga-g])([,']*)" + _LEN)
_FIELD_LINE_RE = re.compile(r"^([A-Za-z+]):(.*)$")
_MUSICAL_FIELDS = frozenset("KMLPVU")  # body fields that change how the music after them is read
_USER_SYMBOL_RE = re.compile(r"^\s*(\S)\s*=\s*(?:![^!]*!|\+[^+]*\+)\s*$")
_NOT_REDEFINABLE = frozenset("ABCDEFGabcdefgzxZX|[]:{}()\"<>-&/0123456789^_=,'%")


def _small_int(text: str, reason: str) -> int:
    """int() of a digit run, refusing absurd ones (they would overflow floats or Python's int parser)."""
    if len(text) > 6:
        raise SkipTune(reason, f"number too large: {text[:12]}...")
    return int(text)


def _length(num: Optional[str], slashes: Optional[str], den: Optional[str]) -> float:
    """Multiplier of the unit length written after a note: ``2``, ``/``, ``//``, ``3/2``, ``/4``."""
    n = _small_int(num, "bad_duration") if num else 1
    if slashes:
        if len(slashes) > 8:
            raise SkipTune("bad_duration", f"{len(slashes)} slashes")
        if den:
            d = _small_int(den, "bad_duration") * (2 ** (len(slashes) - 1))
        else:
            d = 2 ** len(slashes)
    else:
        d = 1
    if n == 0 or d == 0:
        raise SkipTune("bad_duration", f"zero length {num or ''}{slashes or ''}{den or ''}")
    return n / d


def _octave_shift(marks: str) -> int:
    return 12 * (marks.count("'") - marks.count(","))


# ----------------------------------------------------------------------------- body parsing


class _Segment:
    """The music between two barlines: events [pitch (-1 = rest), duration in beats, tied]."""

    __slots__ = ("events", "meter", "length")

    def __init__(self, meter: Meter):
        self.events: List[list] = []
        self.meter = meter
        self.length = 0.0


# Items of the written tune, in order:
#   _Segment
#   ("bar", end_repeat, start_repeat, double)
#   ("ending", frozenset of pass numbers)
#   ("label", name)


class _TuneParser:
    """Reads one tune text into header values and a list of written items."""

    def __init__(self) -> None:
        self.title = ""
        self.items: List[object] = []
        self.part_order: List[str] = []
        self.header_meter: Optional[Meter] = None
        self.unit: Optional[float] = None
        self.meter: Meter = (4, 4)
        self.key: Optional[Dict[str, int]] = None
        self.bar_acc: Dict[Tuple[str, int], int] = {}
        self.seg = _Segment(self.meter)
        self.tuplet_left = 0
        self.tuplet_factor = 1.0
        self.next_factor = 1.0
        self.last_event: Optional[list] = None
        self.tie_carry: Optional[Tuple[str, int, int]] = None  # (letter, octave, pitch)
        self.last_note: Optional[Tuple[str, int, int]] = None
        self.first_voice: Optional[str] = None
        self.voice_active = True
        self.n_pitched = 0
        self.user_decorations: set = set()  # symbols defined by U: as decorations
        self.meter_problem = ""  # M:none or an unreadable M: (the tune is skipped after parsing)

    # -- header -------------------------------------------------------------
    def parse(self, text: str) -> None:
        # Only \n and \r end a line (str.splitlines also splits on \x85, \x0c, ... inside text).
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        i = self._parse_header(lines)
        seen_music = False
        pending = ""  # music continued with a trailing backslash onto the next music line
        while i < len(lines):
            line = lines[i]
            i += 1
            stripped = line.strip()
            if not stripped:
                if seen_music:
                    break  # a blank line ends the tune
                continue
            if stripped.startswith("%"):
                continue
            fm = _FIELD_LINE_RE.match(stripped)
            if fm is not None:
                if fm.group(1) in _MUSICAL_FIELDS and pending:
                    self._music_line(pending)  # the field applies after the continued music
                    pending = ""
                self._body_field(fm.group(1), fm.group(2).split("%", 1)[0].strip())
                continue
            # Lines of other voices are read too: an inline [V:] in them may switch back.
            music = pending + line.split("%", 1)[0].rstrip()
            seen_music = True
            if music.endswith("\\"):
                pending = music[:-1]
                continue
            pending = ""
            self._music_line(music)
        if pending:
            self._music_line(pending)
        self._close_segment()

    def _parse_header(self, lines: List[str]) -> int:
        """Read the header fields up to ``K:``; returns the index of the first body line."""
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            while line.rstrip().endswith("\\") and i < len(lines):
                line = line.rstrip()[:-1] + " " + lines[i]  # a continued header line
                i += 1
            stripped = line.strip()
            if not stripped or stripped.startswith("%"):
                continue
            fm = _FIELD_LINE_RE.match(stripped)
            if fm is None:
                raise SkipTune("bad_header", f"not a field line before K: {stripped[:40]!r}")
            self._header_field(fm.group(1), fm.group(2).split("%", 1)[0].strip())
            if fm.group(1) == "K":
                return i
        raise SkipTune("no_key_field", "no K: field")

    def _header_field(self, key: str, value: str) -> None:
        if key == "T" and not self.title:
            self.title = value
        elif key == "M":
            self.meter_problem = ""  # a later header M: replaces an earlier one
            meter = self._read_meter(value)
            self.header_meter = meter
            self.meter = meter or (4, 4)
            self.seg.meter = self.meter
        elif key == "L":
            self.unit = parse_unit_length(value)
        elif key == "P":
            self.part_order = parse_part_order(value)
        elif key == "V" and self.first_voice is None:
            self.first_voice = value.split()[0] if value.split() else ""  # a declaration only
        elif key == "U":
            self._user_symbol(value)
        elif key == "K":
            key_map = parse_key(value)
            self.key = key_map if key_map is not None else {c: 0 for c in _LETTERS}
            if self.unit is None:
                self.unit = default_unit_length(self.header_meter)

    def _body_field(self, key: str, value: str) -> None:
        if key == "V":
            self._voice(value)
            return
        if not self.voice_active:
            return
        if key == "K":
            key_map = parse_key(value)
            if key_map is not None:
                self.key = key_map
                self.bar_acc = {}
        elif key == "M":
            # A change inside a bar takes effect at the next barline.
            self.meter = self._read_meter(value) or self.meter
            if not self.seg.events:
                self.seg.meter = self.meter
        elif key == "L":
            self.unit = parse_unit_length(value)
        elif key == "P":
            self._close_segment()
            label = value.strip()[:1]
            self.items.append(("label", label))
        elif key == "U":
            self._user_symbol(value)
        # Other fields (T:, w:, W:, Q:, N:, R:, ...) carry no melody.

    def _read_meter(self, value: str) -> Optional[Meter]:
        """parse_meter, except that ``M:none`` or an unreadable meter is noted, not raised.

        The tune is still read to the end (so that a syntax error in it is
        counted as such); :func:`abc_tune_to_sequence` then skips it as
        ``unsupported_meter``.
        """
        try:
            if value.strip().lower() == "none":
                raise SkipTune("unsupported_meter", "M:none")
            return parse_meter(value)
        except SkipTune as skip:
            self.meter_problem = self.meter_problem or skip.detail
            return None

    def _user_symbol(self, value: str) -> None:
        """``U: Y = !trill!``: a symbol defined as a decoration is read as one from here on.

        ``~``, ``H``-``W`` and ``h``-``w`` are decorations whatever they are defined as
        (the tokenizer skips them); a definition of a note, rest or bar character
        changes nothing.
        """
        m = _USER_SYMBOL_RE.match(value)
        if m and m.group(1) not in _NOT_REDEFINABLE:
            self.user_decorations.add(m.group(1))

    def _voice(self, value: str) -> None:
        name = value.split()[0] if value.split() else ""
        if self.first_voice is None:
            self.first_voice = name
        self.voice_active = name == self.first_voice

    # -- music --------------------------------------------------------------
    def _close_segment(self) -> None:
        seg = self.seg
        if seg.events:
            seg.length = sum(e[1] for e in seg.events)
            self.items.append(seg)
        self.seg = _Segment(self.meter)

    def _add_event(self, pitch: int, dur: float) -> list:
        self.tie_carry = None  # only the first note after the barline can continue a tie
        if self.next_factor != 1.0:
            dur *= self.next_factor
            self.next_factor = 1.0
        if self.tuplet_left:
            dur *= self.tuplet_factor
            self.tuplet_left -= 1
        event = [pitch, dur, False]
        self.seg.events.append(event)
        self.last_event = event
        return event

    def _pitch(self, acc: Optional[str], letter: str, marks: str) -> int:
        low = letter.lower()
        octave = (12 if letter.islower() else 0) + (_octave_shift(marks) if marks else 0)
        if acc:
            alter = _ACC_VALUE[acc]
            self.bar_acc[(low, octave)] = alter
        else:
            carry = self.tie_carry
            if carry is not None and carry[0] == low and carry[1] == octave:
                self.tie_carry = None
                return carry[2]
            alter = self.bar_acc.get((low, octave))
            if alter is None:
                alter = self.key[low]
        pitch = 60 + _SEMITONE[low] + octave + alter
        if not 0 <= pitch <= 127:
            raise SkipTune("pitch_out_of_range", f"{acc or ''}{letter}{marks}")
        self.last_note = (low, octave, pitch)
        return pitch

    def _music_line(self, line: str) -> None:
        unit = self.unit
        for m in _TOKEN_RE.finditer(line):
            kind = m.lastgroup
            if not self.voice_active and kind != "field":
                continue  # another voice's music (after an inline [V:])
            if kind == "note":
                pitch = self._pitch(m.group(2), m.group(3), m.group(4))
                self._add_event(pitch, unit * _length(m.group(5), m.group(6), m.group(7)))
                self.n_pitched += 1
            elif kind == "skip":
                continue
            elif kind == "bar":
                self._barline(m.group(14), m.group(15))
            elif kind == "rest":
                self._add_event(-1, unit * _length(m.group(10), m.group(11), m.group(12)))
            elif kind == "tie":
                if self.last_event is not None and self.last_event[0] >= 0:
                    self.last_event[2] = True
            elif kind == "broken":
                self._broken(m.group())
            elif kind == "tuplet":
                self._tuplet(m.group(27), m.group(28), m.group(29))
            elif kind == "chord":
                self._chord(m.group(22), m.group(23), m.group(24), m.group(25))
            elif kind == "ending":
                self._close_segment()
                self.items.append(("ending", _ending_numbers(m.group(17))))
            elif kind == "field":
                key, value = m.group(19), m.group(20).strip()
                if key in _MUSICAL_FIELDS:
                    self._body_field(key, value)
                    unit = self.unit
            elif kind == "mrest":
                bars = _small_int(m.group(33), "bad_duration") if m.group(33) else 1
                num, den = self.seg.meter
                self._add_event(-1, bars * num * 4.0 / den)
            elif kind == "overlay":
                raise SkipTune("polyphonic", "voice overlay '&'")
            elif m.group() not in self.user_decorations:
                raise SkipTune("bad_syntax", f"unexpected {m.group()!r}")

    def _barline(self, text: str, numbers: Optional[str]) -> None:
        last, meta = self.last_event, self.last_note
        if last is not None and last[2] and meta is not None and meta[2] == last[0]:
            # A note tied over the barline keeps its accidental in the next bar.
            self.tie_carry = meta
        self._close_segment()
        self.bar_acc = {}
        if set(text) == {":"}:
            end_rep = start_rep = True
            double = False
        elif text == "[|]":  # an invisible bar line: not a section start
            end_rep = start_rep = double = False
        else:
            end_rep = text.startswith(":")
            start_rep = text.endswith(":")
            double = "||" in text or "]" in text or "[|" in text
        self.items.append(("bar", end_rep, start_rep, double))
        if numbers:
            self.items.append(("ending", _ending_numbers(numbers)))

    def _broken(self, marks: str) -> None:
        if len(set(marks)) != 1 or len(marks) > 3:
            raise SkipTune("bad_syntax", f"broken rhythm {marks!r}")
        last = self.last_event
        if last is None or not self.seg.events or self.seg.events[-1] is not last:
            raise SkipTune("bad_duration", f"broken rhythm {marks!r} with no note before it")
        short = 0.5 ** len(marks)
        if marks[0] == ">":
            last[1] *= 2.0 - short
            self.next_factor = short
        else:
            last[1] *= short
            self.next_factor = 2.0 - short

    def _tuplet(self, p_text: str, q_text: Optional[str], r_text: Optional[str]) -> None:
        p = _small_int(p_text, "bad_tuplet")
        if p < 2 or p > 64:
            raise SkipTune("bad_tuplet", f"({p_text}")
        if q_text:
            q = _small_int(q_text, "bad_tuplet")
        elif p in (3, 6):
            q = 2
        elif p in (2, 4, 8):
            q = 3
        else:
            num = self.seg.meter[0]
            q = 3 if num % 3 == 0 and num > 3 else 2
        r = _small_int(r_text, "bad_tuplet") if r_text else p
        if q <= 0 or r <= 0 or q > 64 or r > 64:
            raise SkipTune("bad_tuplet", f"({p_text}:{q_text}:{r_text}")
        self.tuplet_factor = q / p
        self.tuplet_left = r

    def _chord(self, body: str, num, slashes, den) -> None:
        notes = _CHORD_NOTE_RE.findall(body)
        if not notes:
            return  # "[]" or a chord of rests: nothing to play
        top = -1
        first_len = None
        for acc, letter, marks, n, s, d in notes:
            pitch = self._pitch(acc or None, letter, marks)
            top = max(top, pitch)
            if first_len is None:
                first_len = _length(n or None, s or None, d or None)
        event = self._add_event(top, self.unit * first_len * _length(num, slashes, den))
        self.n_pitched += 1
        if "-" in body:
            event[2] = True


def _ending_numbers(text: str) -> frozenset:
    """``1``, ``1,3``, ``1-3`` -> the pass numbers of a variant ending."""
    if len(text) > 40:
        raise SkipTune("unbalanced_repeat", f"variant ending {text[:40]}...")
    nums = set()
    for part in text.split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            if a and b and int(a) <= int(b) <= 64:
                nums.update(range(int(a), int(b) + 1))
        elif part:
            nums.add(int(part))
    return frozenset(n for n in nums if 1 <= n <= 64)


# ----------------------------------------------------------------------------- repeats -> played order

Played = List[Tuple[_Segment, bool]]  # (segment, starts a section: a pickup may sit here)


def _passes_needed(items: Sequence[object], start: int) -> int:
    """How often the repeat section starting at ``start`` is played: the highest ending number, at least 2."""
    numbers: set = set()
    seen_end = False
    for j in range(start, len(items)):
        it = items[j]
        if type(it) is _Segment:
            continue
        tag = it[0]
        if tag == "ending":
            numbers |= it[1]
        elif tag == "label":
            break
        else:
            _, end_rep, start_rep, double = it
            if end_rep:
                seen_end = True
                if not numbers:
                    break
            if start_rep or (double and seen_end):
                break
    return max(max(numbers), 2) if numbers else 2


def expand_repeats(items: Sequence[object]) -> Played:
    """Play the written items like a musician reads them: repeats, variant endings, sections.

    Returns the segments in played order, each flagged when it starts a section
    (tune start, after a repeat sign, double bar or part label) -- the places
    where a pickup can sit.
    """
    n = len(items)
    out: Played = []
    i = 0
    section_start = 0
    explicit = False  # the section was opened by |:
    pass_no = 1
    closing = False  # playing the final variant ending
    fresh = True
    passes_cache: Dict[int, int] = {}
    steps, limit = 0, 64 * (n + 16)

    def passes() -> int:
        if section_start not in passes_cache:
            passes_cache[section_start] = _passes_needed(items, section_start)
        return passes_cache[section_start]

    while i < n:
        steps += 1
        if steps > limit:
            raise SkipTune("unbalanced_repeat", "repeat expansion does not terminate")
        it = items[i]
        if type(it) is _Segment:
            out.append((it, fresh))
            fresh = False
            i += 1
            continue
        tag = it[0]
        if tag == "bar":
            _, end_rep, start_rep, double = it
            if end_rep and not closing and pass_no < passes():
                pass_no += 1
                i = section_start
                fresh = True
                continue
            if end_rep or start_rep or (double and (closing or not explicit)):
                section_start, explicit, pass_no, closing, fresh = i + 1, start_rep, 1, False, True
            i += 1
        elif tag == "ending":
            if pass_no in it[1]:
                if pass_no >= passes():
                    closing = True
                i += 1
                continue
            # Not this pass's ending: skip to the next ending or past the end repeat.
            j = i + 1
            while j < n:
                other = items[j]
                if type(other) is _Segment:
                    j += 1
                    continue
                if other[0] == "ending" or other[0] == "label":
                    break
                _, end_rep, start_rep, double = other
                if end_rep:
                    j += 1
                    if start_rep:
                        section_start, explicit, pass_no, closing, fresh = j, True, 1, False, True
                    break
                if start_rep or double:
                    break
                j += 1
            i = j
        else:  # part label
            section_start, explicit, pass_no, closing, fresh = i + 1, False, 1, False, True
            i += 1
    return out


def _played_order(parser: _TuneParser) -> Played:
    """Apply the header ``P:`` play order (if it names labelled parts), else play straight through."""
    items = parser.items
    if parser.part_order:
        parts: Dict[str, List[object]] = {}
        prelude: List[object] = []
        current = prelude
        for it in items:
            if type(it) is not _Segment and it[0] == "label":
                current = parts.setdefault(it[1], [])
            else:
                current.append(it)
        order = [p for p in parser.part_order if p in parts]
        if order:
            played = expand_repeats(prelude)
            for name in order:
                played.extend(expand_repeats(parts[name]))
            return played
    return expand_repeats(items)


# ----------------------------------------------------------------------------- layout on the bar grid


class _Layout:
    """Lays played segments out in beats, keeping every bar on the barline grid."""

    def __init__(self) -> None:
        self.notes: List[list] = []  # [pitch, start, end, tied]
        self.signatures: List[Tuple[float, int, int]] = []
        self.cursor = 0.0
        self.origin = 0.0  # time of the last meter change: bars are counted from here
        self.meter: Optional[Meter] = None
        self.bar_len = 4.0
        self.pending: Optional[list] = None  # [length so far, first note index, is a pickup]

    def run(self, played: Played) -> None:
        for seg, fresh in played:
            if seg.meter != self.meter:
                self._resolve_pending()
                self.meter = seg.meter
                self.bar_len = seg.meter[0] * 4.0 / seg.meter[1]
                self.origin = self.cursor
                self.signatures.append((self.cursor, seg.meter[0], seg.meter[1]))
                fresh = True
            length = seg.length
            bar_len = self.bar_len
            if self.pending is not None:
                total = self.pending[0] + length
                if total < bar_len - _EPS:
                    self._emit(seg)
                    self.pending[0] = total
                    continue
                if total < bar_len + _EPS:  # the short bar is completed
                    self._emit(seg)
                    self.pending = None
                    continue
                self._resolve_pending()
            first_note = len(self.notes)
            self._emit(seg)
            bars = round(length / bar_len)
            if bars >= 1 and abs(length - bars * bar_len) < _EPS:
                continue
            if length < bar_len:
                self.pending = [length, first_note, fresh]
                continue
            # An over-long bar: the next one starts on the next barline.
            self.cursor = self.origin + math.ceil((self.cursor - self.origin) / bar_len - _EPS) * bar_len
            if self.cursor > 1e5:
                raise SkipTune("too_long", "more than 100000 beats")

    def _resolve_pending(self) -> None:
        """Pad a short bar that was not completed: before it for a pickup, else after it."""
        if self.pending is None:
            return
        length, first_note, pickup = self.pending
        self.pending = None
        pad = self.bar_len - length
        if pickup:
            for note in self.notes[first_note:]:
                note[1] += pad
                note[2] += pad
        self.cursor += pad

    def _emit(self, seg: _Segment) -> None:
        notes = self.notes
        cursor = self.cursor
        for pitch, dur, tied in seg.events:
            if pitch >= 0:
                last = notes[-1] if notes else None
                if last is not None and last[3] and last[0] == pitch and abs(last[2] - cursor) < _EPS:
                    last[2] = cursor + dur
                    last[3] = tied
                else:
                    notes.append([pitch, cursor, cursor + dur, tied])
            cursor += dur
        self.cursor = cursor
        if len(notes) > MAX_NOTES or cursor > 1e5:
            raise SkipTune("too_long", f"more than {MAX_NOTES} notes or 100000 beats")


# ----------------------------------------------------------------------------- NoteSequence


def build_sequence(
    notes: Sequence[Sequence[float]],
    signatures: Sequence[Tuple[float, int, int]],
    total_beats: float,
    *,
    origin: str = "",
    index: int = 0,
    title: str = "",
    encoding: int = music_pb2.NoteSequence.SourceInfo.ABC,
) -> music_pb2.NoteSequence:
    """A qpm-120 NoteSequence from (pitch, start_beat, end_beat) notes and (beat, num, den) meters."""
    seq = music_pb2.NoteSequence()
    seq.id = f"{origin}#{index}"
    seq.filename = origin
    if title:
        seq.sequence_metadata.title = title
    seq.ticks_per_quarter = 220
    seq.source_info.source_type = music_pb2.NoteSequence.SourceInfo.SCORE_BASED
    seq.source_info.encoding_type = encoding
    seq.tempos.add(time=0.0, qpm=QPM)
    last_time = None
    for beat, num, den in signatures:
        if last_time is not None and abs(beat - last_time) < _EPS:
            del seq.time_signatures[-1]
        seq.time_signatures.add(time=beat * SECONDS_PER_BEAT, numerator=num, denominator=den)
        last_time = beat
    add = seq.notes.add
    end = 0.0
    for note in notes:
        add(pitch=int(note[0]), velocity=VELOCITY, start_time=note[1] * SECONDS_PER_BEAT,
            end_time=note[2] * SECONDS_PER_BEAT)
        end = max(end, note[2])
    seq.total_time = max(end, total_beats) * SECONDS_PER_BEAT
    return seq


def abc_tune_to_sequence(text: str, origin: str = "", index: int = 0) -> music_pb2.NoteSequence:
    """One ABC tune (``X:`` ... ) -> a monophonic qpm-120 NoteSequence; raises SkipTune."""
    parser = _TuneParser()
    parser.parse(text)
    if parser.meter_problem:
        raise SkipTune("unsupported_meter", parser.meter_problem)
    if parser.n_pitched == 0:
        raise SkipTune("no_notes", "no pitched note")
    layout = _Layout()
    layout.run(_played_order(parser))
    if not layout.notes:
        raise SkipTune("no_notes", "no pitched note in the played order")
    return build_sequence(layout.notes, layout.signatures, layout.cursor,
                          origin=origin, index=index, title=parser.title)


# ----------------------------------------------------------------------------- folk-rnn tokens

_BLANK_LINES = re.compile(r"\n[ \t\r]*\n")
_FOLK_FIELD = re.compile(r"^([A-Za-z]):(.*)$")
_FOLK_MARKERS = {"<s>", "</s>"}  # sequence start/end tokens of the folk-rnn models, if present


def split_folk_rnn(text: str) -> List[str]:
    """Split the folk-rnn corpus (tunes separated by blank lines) into token tunes."""
    return [t.strip() for t in _BLANK_LINES.split(text.replace("\r\n", "\n")) if t.strip()]


def folk_rnn_to_abc(text: str, index: int = 0) -> str:
    """A folk-rnn token tune (``M:4/4 K:Cmaj |: G c ...``) -> ABC text with ``L:1/8``.

    Leading ``M:``/``K:``/``L:`` tokens become header lines; later field tokens
    become inline fields.  Music tokens are written without the separating
    spaces, so duration tokens join their notes (``c 2`` -> ``c2``).
    """
    tokens = [t for t in text.split() if t not in _FOLK_MARKERS]
    header = {"M": None, "L": "1/8", "K": None}
    i = 0
    while i < len(tokens):
        m = _FOLK_FIELD.match(tokens[i])
        if m is None or m.group(1) not in header:
            break
        header[m.group(1)] = m.group(2)
        i += 1
    body = []
    for tok in tokens[i:]:
        m = _FOLK_FIELD.match(tok)
        body.append(f"[{m.group(1)}:{m.group(2)}]" if m else tok)
    if not body:
        raise SkipTune("empty_tune", "no music tokens")
    if header["K"] is None:
        raise SkipTune("no_key_field", "no K: token")
    lines = [f"X:{index + 1}"]
    if header["M"] is not None:
        lines.append(f"M:{header['M']}")
    lines.append(f"L:{header['L']}")
    lines.append(f"K:{header['K']}")
    lines.append("".join(body))
    return "\n".join(lines) + "\n"


def folk_rnn_tune_to_sequence(text: str, origin: str = "", index: int = 0) -> music_pb2.NoteSequence:
    """One folk-rnn token tune -> NoteSequence (through the ABC reader); raises SkipTune."""
    return abc_tune_to_sequence(folk_rnn_to_abc(text, index), origin=origin, index=index)
