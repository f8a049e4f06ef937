"""Tokens -> ABC notation: the key, the note spelling, tuplets and ties (``render.py`` draws and writes MIDI).

``tokens_to_abc`` writes one tune of 4/4 measures that the package's own ABC
reader (and music21) read back to the same notes; ``guess_key`` picks the
signature needing the fewest accidentals.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import pretty_midi

from music_attr_vae import fileio
from music_attr_vae.data import abc_reader
from music_attr_vae.data.codec import CODEC, Segment

TICK_TWELFTHS = CODEC.TICK_TWELFTHS
TWELFTHS_PER_BEAT = CODEC.TWELFTHS_PER_BEAT
TWELFTHS_PER_MEASURE = CODEC.twelfths_per_measure


# The major keys ABC output may be written in; their signatures come from the ABC reader's key table.
MAJOR_KEYS = ("C", "G", "D", "A", "E", "B", "F#", "C#", "F", "Bb", "Eb", "Ab", "Db", "Gb", "Cb")
_LETTER_SEMITONE = {letter: pretty_midi.note_name_to_number(f"{letter}-1") for letter in "CDEFGAB"}


def key_signature(key: str) -> Dict[str, int]:
    """{letter "C".."B": +1 sharp / -1 flat / 0} of a major key of ``MAJOR_KEYS``."""
    if key not in MAJOR_KEYS:
        raise ValueError(f"unsupported key {key!r}; use a major key: {', '.join(MAJOR_KEYS)}")
    return {letter.upper(): alt for letter, alt in abc_reader.parse_key(key).items()}


class _Speller:
    """Spells MIDI pitches as ABC notes for one key, bar by bar.

    An accidental is written whenever a note differs from the key signature,
    and once a letter has carried one in a bar, every later note on that letter
    in the bar (in any octave) carries its own (``=`` included).  The text then
    reads the same under every ABC reader's accidental-scope convention
    (per letter, per letter and octave, or none).
    """

    def __init__(self, key: str):
        self.signature = key_signature(key)
        self.use_flats = sum(self.signature.values()) < 0
        self.bar_state: dict = {}

    def new_bar(self) -> None:
        self.bar_state = {}

    def spell(self, pitch: int) -> str:
        pc = pitch % 12
        octave = pitch // 12 - 1
        candidates = [(l, pc - s) for l, s in _LETTER_SEMITONE.items() if pc - s in (-1, 0, 1)]
        candidates += [(l, pc + 12 - s) for l, s in _LETTER_SEMITONE.items() if pc + 12 - s == 1]  # B# style
        candidates += [(l, pc - 12 - s) for l, s in _LETTER_SEMITONE.items() if pc - 12 - s == -1]  # Cb style
        # Prefer the letter the key signature already alters, then naturals, then sharps/flats.
        def rank(c):
            letter, alt = c
            if alt == self.signature[letter]:
                return 0
            if alt == 0:
                return 1
            return 2 if (alt < 0) == self.use_flats else 3

        letter, alt = min(candidates, key=rank)
        if letter == "B" and alt == 1 and pc == 0:
            octave -= 1  # B# belongs to the octave below
        if letter == "C" and alt == -1 and pc == 11:
            octave += 1
        sign = ""
        if letter in self.bar_state or alt != self.signature[letter]:
            sign = {1: "^", 0: "=", -1: "_"}[alt]
            self.bar_state[letter] = True
        return sign + _abc_octave(letter, octave)


def _scale(key: str) -> set:
    """Pitch classes of a major key's scale."""
    return {(_LETTER_SEMITONE[letter] + alt) % 12 for letter, alt in key_signature(key).items()}


def guess_key(tokens, transpose: int = 0) -> str:
    """The key signature that needs the fewest accidentals for these notes (fewest sharps/flats on ties).

    Named by its major key; a minor or modal tune gets the signature it shares
    with that major key, which is all ABC needs to spell the notes.
    """
    arr = CODEC.check_tokens(tokens)
    pcs = (arr[arr < CODEC.num_pitches].astype(int) + CODEC.min_pitch + transpose) % 12
    counts = np.bincount(pcs, minlength=12)
    accidentals = {k: sum(abs(a) for a in key_signature(k).values()) for k in MAJOR_KEYS}
    keys = [k for k in MAJOR_KEYS if accidentals[k] <= 6 and k != "Gb"]
    return min(keys, key=lambda k: (sum(counts[pc] for pc in range(12) if pc not in _scale(k)), accidentals[k]))


def _abc_octave(letter: str, octave: int) -> str:
    """ABC letter case and octave marks: C = C4 (middle C), c = C5, C, = C3, c' = C6."""
    if octave >= 5:
        return letter.lower() + "'" * (octave - 5)
    return letter + "," * (4 - octave)


def _abc_length(units2: int) -> str:
    """An ABC length suffix for ``units2`` half-units of the unit note length L."""
    if units2 % 2 == 0:
        units = units2 // 2
        return "" if units == 1 else str(units)
    return "/2" if units2 == 1 else f"{units2}/2"


def _split_at(segments: List[Segment], cuts: Sequence[int]) -> List[Segment]:
    """Cut segments at the given positions; the later pieces of a note are tied in."""
    out = []
    for seg in segments:
        start = seg.start
        tied = seg.tied_in
        for cut in cuts:
            if start < cut < seg.end:
                out.append(Segment(seg.pitch, start, cut, tied))
                start, tied = cut, not seg.is_rest
        out.append(Segment(seg.pitch, start, seg.end, tied))
    return out


def _beat_kind(segments: List[Segment], beat_start: int) -> str:
    """'plain' when every boundary inside the beat sits on a sixteenth, else 'tuplet'."""
    inner = {s.start - beat_start for s in segments if beat_start < s.start < beat_start + TWELFTHS_PER_BEAT}
    return "plain" if all(x % 3 == 0 for x in inner) else "tuplet"


def _measure_abc(bar: List[Segment], measure: int, speller: _Speller, tie_out: bool) -> str:
    """ABC text of one measure, with L:1/16.

    Beats whose onsets all sit on sixteenths are written plainly, and runs of
    such beats share long notes (a half note is ``A8``).  Any beat that uses a
    triplet position is written as ``(3`` groups of three notes whose written
    lengths (in half sixteenths) are scaled by 2/3; notes are split with ties
    to make up groups of three, so only the common ``(3`` syntax is needed.
    """
    speller.new_bar()
    base = measure * TWELFTHS_PER_MEASURE
    beats = range(CODEC.beats_per_measure)
    kinds = [_beat_kind(bar, base + b * TWELFTHS_PER_BEAT) for b in beats]
    # Cut notes where the writing style changes (around tuplet beats).
    cuts = sorted(
        {base + b * TWELFTHS_PER_BEAT for b in beats if b > 0 and (kinds[b] == "tuplet" or kinds[b - 1] == "tuplet")}
    )
    pieces = _split_at(bar, cuts)

    def token(seg: Segment, units2: int, tied_out: bool) -> str:
        body = "z" if seg.is_rest else speller.spell(seg.pitch)
        return body + _abc_length(units2) + ("-" if tied_out and not seg.is_rest else "")

    words: List[str] = []
    for i, seg in enumerate(pieces):
        nxt_tied = pieces[i + 1].tied_in if i + 1 < len(pieces) else tie_out
        beat = (seg.start - base) // TWELFTHS_PER_BEAT
        if kinds[beat] == "plain":
            words.append(token(seg, 2 * (seg.end - seg.start) // 3, nxt_tied))
            continue
        if seg.start - base != beat * TWELFTHS_PER_BEAT:
            continue  # tuplet beats are written whole at their first segment
        words.append(_tuplet_beat(pieces, i, base + beat * TWELFTHS_PER_BEAT, token, tie_out))
    return " ".join(w for w in words if w)


def _tuplet_beat(pieces: List[Segment], first: int, beat_start: int, token, tie_out: bool) -> str:
    """One beat as ``(3`` groups; written length of k twelfths = k half-units (x 2/3 = k/3 sixteenths)."""
    beat_end = beat_start + TWELFTHS_PER_BEAT
    segs = []
    j = first
    while j < len(pieces) and pieces[j].end <= beat_end:
        segs.append(pieces[j])
        j += 1
    after_tied = pieces[j].tied_in if j < len(pieces) else tie_out
    # Only plain or dotted written values inside a tuplet (5 or 9 twelfths are
    # split with a tie), then split until the notes make whole groups of three.
    segs = [piece for seg in segs for piece in _simple_pieces(seg, beat_start)]
    while len(segs) % 3:
        k = max(range(len(segs)), key=lambda x: segs[x].end - segs[x].start)
        segs[k : k + 1] = _cut(segs[k], _TUPLET_CUTS[segs[k].end - segs[k].start][0])
    out = []
    for g in range(0, len(segs), 3):
        group = []
        for k in range(g, g + 3):
            s = segs[k]
            tied_out = segs[k + 1].tied_in if k + 1 < len(segs) else after_tied
            group.append(token(s, s.end - s.start, tied_out))
        out.append("(3" + "".join(group))
    return " ".join(out)


# Lengths (twelfths of a beat) a tuplet note may have: written as 1/2, 1, 3/2, 2, 3 or
# 4 sixteenths under the 2/3 factor, i.e. plain or dotted values.
_TUPLET_SIMPLE = (1, 2, 3, 4, 6, 8)
# For each length, the ways to cut it into two simple lengths (first part first).
_TUPLET_CUTS = {
    k: sorted(
        (a for a in _TUPLET_SIMPLE if k - a in _TUPLET_SIMPLE), key=lambda a: (abs(2 * a - k), -a)
    )
    for k in range(2, 13)
}


def _cut(seg: Segment, first: int) -> List[Segment]:
    """Split a segment after ``first`` twelfths; the second part is tied in (for notes)."""
    mid = seg.start + first
    return [Segment(seg.pitch, seg.start, mid, seg.tied_in), Segment(seg.pitch, mid, seg.end, not seg.is_rest)]


def _simple_pieces(seg: Segment, beat_start: int) -> List[Segment]:
    """A tuplet-beat segment as pieces of simple length, cut on a tick position when possible."""
    length = seg.end - seg.start
    if length in _TUPLET_SIMPLE:
        return [seg]
    options = _TUPLET_CUTS[length]
    on_tick = [a for a in options if (seg.start + a - beat_start) % TWELFTHS_PER_BEAT in TICK_TWELFTHS]
    return _cut(seg, (on_tick or options)[0])


def tokens_to_abc(
    tokens,
    title: str = "music-attr-vae",
    key: str = "C",
    reference: int = 1,
    qpm: float = CODEC.DEFAULT_QPM,
    measures_per_line: int = 4,
    transpose: int = 0,
) -> str:
    """A complete ABC tune (X:, T:, M:4/4, L:1/16, Q:, K:) of token measures (N, 24).

    Notes held over a barline (a HOLD on tick 0) are tied with ``-``; rests are
    ``z``; pitches outside the key signature carry explicit accidentals.  Every
    bar is complete, so the tune reads back to the same measures.  ``transpose``
    moves every pitch by that many semitones (e.g. back to a tune's own key);
    ``key="auto"`` picks the signature with the fewest accidentals (:func:`guess_key`).
    """
    arr = CODEC.check_tokens(tokens)
    if arr.shape[0] == 0:
        raise ValueError("tokens_to_abc needs at least one measure")
    if key == "auto":
        key = guess_key(arr, transpose)
    bars = CODEC.segments(arr)
    for seg in (s for bar in bars for s in bar):
        if not seg.is_rest:
            seg.pitch += int(transpose)
            if not 0 <= seg.pitch <= 127:
                raise ValueError(f"transposing by {transpose:+d} puts a note outside MIDI 0..127")
    speller = _Speller(key)
    title = " ".join(str(title).split()) or "untitled"
    lines = [f"X:{int(reference)}", f"T:{title}", "M:4/4", "L:1/16", f"Q:1/4={int(round(qpm))}", f"K:{key}"]
    body = []
    for m, bar in enumerate(bars):
        tie_out = m + 1 < len(bars) and bars[m + 1][0].tied_in
        body.append(_measure_abc(bar, m, speller, tie_out))
    for i in range(0, len(body), measures_per_line):
        chunk = body[i : i + measures_per_line]
        end = " |]" if i + measures_per_line >= len(body) else " |"
        lines.append(" | ".join(chunk) + end)
    return "\n".join(lines) + "\n"


def write_abc(tokens, path: str, **kwargs) -> None:
    """Write :func:`tokens_to_abc` text to ``path`` atomically."""
    fileio.write_text(path, tokens_to_abc(tokens, **kwargs))

