"""Token measures -> piano-roll pictures, MIDI files and ABC text.

Everything here works on token measures of shape (N, 24) (see
``data/measures.py``) laid end to end as one 4/4 passage, so the same code
renders a traversal, a sample from the prior or a whole edited tune.

Time is handled in *twelfths of a beat*: the six ticks of a beat start at
0, 3, 4, 6, 8 and 9 twelfths, so every duration the grid can express is a whole
number of twelfths and no floating point rounding enters the ABC writer.

Ties follow the vocabulary: a HOLD on tick 0 of a measure continues the last
note of the previous measure (drawn as one bar across the barline, written as
an ABC tie ``-``), while the same pitch struck again on tick 0 is a new note
(the piano roll marks every onset with a dark edge so the two read differently).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pretty_midi

from music_attr_vae import fileio
from music_attr_vae.data import abc_reader, measures

TWELFTHS_PER_BEAT = 12
# Start of each of the 6 ticks of a beat, in twelfths of the beat.
_TICK_TWELFTHS = (0, 3, 4, 6, 8, 9)
_TWELFTHS_PER_MEASURE = measures.BEATS_PER_MEASURE * TWELFTHS_PER_BEAT



@dataclasses.dataclass
class Segment:
    """A note (``pitch`` = MIDI number) or a rest (``pitch`` None) inside one measure.

    ``start``/``end`` count twelfths of a beat from the start of the passage.
    ``tied_in`` marks a note that continues the previous measure's last note
    (a HOLD on tick 0), i.e. no new onset.
    """

    pitch: Optional[int]
    start: int
    end: int
    tied_in: bool = False

    @property
    def is_rest(self) -> bool:
        return self.pitch is None


def tick_twelfths(measure: int, tick: int) -> int:
    """Position of ``tick`` of ``measure`` in twelfths of a beat from the start."""
    beat, sub = divmod(int(tick), measures.TICKS_PER_BEAT)
    return measure * _TWELFTHS_PER_MEASURE + beat * TWELFTHS_PER_BEAT + _TICK_TWELFTHS[sub]


def measure_segments(tokens) -> List[List[Segment]]:
    """Split token measures into notes and rests, one list per measure.

    Segments never cross a barline: a note held over the barline ends the first
    measure's list and starts the next one with ``tied_in=True``.  Consecutive
    rests merge (a REST after a rest adds nothing audible).  A HOLD with nothing
    before it (tick 0 of the first measure) is a rest.
    """
    arr = measures.check_tokens(tokens)
    out: List[List[Segment]] = []
    current: Optional[Segment] = None
    for m, row in enumerate(arr):
        bar: List[Segment] = []
        bar_start = m * _TWELFTHS_PER_MEASURE
        for t, tok in enumerate(row):
            at = tick_twelfths(m, t)
            if tok < measures.NUM_PITCHES:
                current = Segment(measures.MIN_PITCH + int(tok), at, at)
            elif tok == measures.REST:
                if current is None or not current.is_rest or t == 0:
                    current = Segment(None, at, at)
            elif current is None:  # HOLD with nothing before it: silence.
                current = Segment(None, at, at)
            elif t == 0:  # HOLD over the barline: continue in this measure.
                current = Segment(current.pitch, at, at, tied_in=not current.is_rest)
            if not bar or bar[-1] is not current:
                bar.append(current)
        # Close every segment at the next one's start / the barline.
        for seg, nxt in zip(bar, bar[1:] + [None]):
            seg.end = nxt.start if nxt is not None else bar_start + _TWELFTHS_PER_MEASURE
        out.append(bar)
    return out


def pitch_bounds(tokens, transpose: int = 0) -> Optional[Tuple[int, int]]:
    """(lowest, highest) sounding MIDI pitch of token measures, or None without notes."""
    arr = measures.check_tokens(tokens)
    onsets = arr[arr < measures.NUM_PITCHES]
    if onsets.size == 0:
        return None
    return int(onsets.min()) + measures.MIN_PITCH + transpose, int(onsets.max()) + measures.MIN_PITCH + transpose


def _is_black(pitch: int) -> bool:
    return "#" in pretty_midi.note_number_to_name(pitch)


def pitch_name(pitch: int) -> str:
    """Scientific pitch name with sharps, e.g. 60 -> 'C4', 61 -> 'C#4'."""
    return pretty_midi.note_number_to_name(pitch)


# ---------------------------------------------------------------- piano roll


def draw_piano_roll(
    ax,
    tokens,
    title: Optional[str] = None,
    *,
    bar_labels: Optional[Sequence[str]] = None,
    highlight: Sequence[int] = (),
    transpose: int = 0,
    pitch_limits: Optional[Tuple[int, int]] = None,
) -> None:
    """Draw N consecutive measures as a piano roll on matplotlib axes ``ax``.

    ``bar_labels`` replaces the default "bar 1", "bar 2"... under each
    measure, ``highlight`` (0-based measure positions) shades measures in
    yellow (e.g. the edited ones) and ``transpose`` shifts the drawn pitches
    (semitones), to show a tune in its own key.  ``pitch_limits`` (low, high
    MIDI) fixes the y range, so that several rolls can be compared row by row.

    Pitch runs up the y axis with note names (black-key rows shaded), time in
    beats along x with bar lines (solid), beat lines (dashed) and faint
    sixteenth lines.  Notes are bars with a dark stripe at each onset, so a note
    struck again on the downbeat looks different from one tied over the
    barline; rests are hatched grey spans.
    """
    bars = measure_segments(tokens)
    n = len(bars)
    segments = [s for bar in bars for s in bar]
    for seg in segments:
        if not seg.is_rest:
            seg.pitch += int(transpose)
    labels = list(bar_labels) if bar_labels is not None else [f"bar {m + 1}" for m in range(n)]
    if len(labels) != n:
        raise ValueError(f"bar_labels has {len(labels)} labels for {n} measures")
    low, high = _pitch_window(segments, pitch_limits)
    beats_total = n * measures.BEATS_PER_MEASURE
    _draw_grid(ax, low, high, beats_total, highlight)
    _draw_segments(ax, segments, low, high)
    ax.set_xlim(0, beats_total)
    ax.set_ylim(low - 0.5, high + 0.5)
    ax.set_xticks([m * measures.BEATS_PER_MEASURE for m in range(n)])
    ax.set_xticklabels(labels, ha="left", fontsize=8)
    ax.set_xticks(range(beats_total + 1), minor=True)
    ax.set_xlabel("time (beats; bars solid, beats dashed)")
    step = 1 if high - low + 1 <= 20 else 2
    ys = [p for p in range(low, high + 1) if not _is_black(p)][::step]
    ax.set_yticks(ys)
    ax.set_yticklabels([pitch_name(p) for p in ys], fontsize=7)
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title, fontsize=9)


def _pitch_window(segments: List[Segment], pitch_limits: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """(low, high) MIDI rows to draw: the notes, ``pitch_limits``, at least an octave, a row of margin."""
    pitches = [s.pitch for s in segments if not s.is_rest]
    low, high = (min(pitches), max(pitches)) if pitches else (60, 72)
    if pitch_limits is not None:
        low, high = min(low, pitch_limits[0]), max(high, pitch_limits[1])
    pad = max(0, 12 - (high - low))
    return low - 1 - pad // 2, high + 1 + (pad - pad // 2)


def _draw_grid(ax, low: int, high: int, beats_total: int, highlight: Sequence[int]) -> None:
    """Black-key rows, bar / beat / sixteenth lines and the highlighted measures."""
    for p in range(low, high + 1):
        if _is_black(p):
            ax.axhspan(p - 0.5, p + 0.5, color="0.93", zorder=0, lw=0)
    for q in range(4 * beats_total + 1):
        x = q / 4.0
        if q % 16 == 0:
            ax.axvline(x, color="0.2", lw=1.4, zorder=1)
        elif q % 4 == 0:
            ax.axvline(x, color="0.55", lw=0.8, ls="--", zorder=1)
        else:
            ax.axvline(x, color="0.85", lw=0.5, zorder=1)
    for m in highlight:
        ax.axvspan(m * measures.BEATS_PER_MEASURE, (m + 1) * measures.BEATS_PER_MEASURE, color="gold", alpha=0.25, lw=0)


def _draw_segments(ax, segments: List[Segment], low: int, high: int) -> None:
    """Notes as bars with an onset stripe (none on a tied continuation); rests as hatched spans."""
    from matplotlib import patches

    height = high - low + 1
    for seg in segments:
        x0, width = seg.start / TWELFTHS_PER_BEAT, (seg.end - seg.start) / TWELFTHS_PER_BEAT
        if seg.is_rest:
            ax.add_patch(
                patches.Rectangle(
                    (x0, low - 0.5), width, height,
                    facecolor="0.6", edgecolor="0.45", alpha=0.2, hatch="//", lw=0, zorder=1.5,
                )
            )
            continue
        ax.add_patch(
            patches.Rectangle(
                (x0, seg.pitch - 0.4), width, 0.8, facecolor="tab:blue", edgecolor="navy", lw=0.6, zorder=2
            )
        )
        if not seg.tied_in:  # onset stripe; tied continuations have none
            ax.add_patch(
                patches.Rectangle(
                    (x0, seg.pitch - 0.4), min(0.06, 0.3 * width), 0.8, facecolor="navy", lw=0, zorder=3
                )
            )


def _new_figure(width: float, height: float):
    """A figure that never touches a display (Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str) -> None:
    """Save a matplotlib figure as PNG atomically (temp file + rename)."""
    with fileio.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def piano_roll_width(num_measures: int) -> float:
    """Figure width (inches) that keeps a sixteenth note visible."""
    return float(min(2.0 + 2.2 * num_measures, 60.0))


def save_piano_roll_png(tokens, path: str, title: Optional[str] = None, **kwargs) -> None:
    """Write a piano roll of token measures (N, 24) to ``path`` as PNG (kwargs: see draw_piano_roll)."""
    save_piano_roll_rows([tokens], path, [title], [kwargs])


def save_piano_roll_rows(
    rows: Sequence, path: str, titles: Sequence[Optional[str]], options: Optional[Sequence[dict]] = None
) -> None:
    """Several piano rolls stacked (e.g. before/after an edit, or one traversal per row).

    ``options`` holds one dict of :func:`draw_piano_roll` keyword arguments per row.
    """
    n = max(measures.check_tokens(r).shape[0] for r in rows)
    options = list(options) if options is not None else [{}] * len(rows)
    fig = _new_figure(piano_roll_width(n), 2.9 * len(rows) + 0.3)
    for i, (row, title, opts) in enumerate(zip(rows, titles, options)):
        draw_piano_roll(fig.add_subplot(len(rows), 1, i + 1), row, title=title, **opts)
    fig.tight_layout()
    save_figure(fig, path)


def tokens_to_note_sequence(tokens, transpose: int = 0, qpm: float = measures.DEFAULT_QPM):
    """measures.tokens_to_sequence, with every pitch moved by ``transpose`` semitones."""
    seq = measures.tokens_to_sequence(tokens, qpm=qpm)
    for note in seq.notes:
        note.pitch += int(transpose)
        if not 0 <= note.pitch <= 127:
            raise ValueError(f"transposing by {transpose:+d} puts a note outside MIDI 0..127")
    return seq


def write_midi(tokens, path: str, qpm: float = measures.DEFAULT_QPM, transpose: int = 0) -> None:
    """Write token measures to a MIDI file (atomically), optionally transposed."""
    if transpose == 0:
        measures.tokens_to_midi_file(tokens, path, qpm=qpm)
        return
    import note_seq

    seq = tokens_to_note_sequence(tokens, transpose, qpm)
    with fileio.atomic_path(path, ".mid") as tmp:
        note_seq.sequence_proto_to_midi_file(seq, tmp)


# ---------------------------------------------------------------- ABC

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
    arr = measures.check_tokens(tokens)
    pcs = (arr[arr < measures.NUM_PITCHES].astype(int) + measures.MIN_PITCH + transpose) % 12
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
    base = measure * _TWELFTHS_PER_MEASURE
    beats = range(measures.BEATS_PER_MEASURE)
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
    on_tick = [a for a in options if (seg.start + a - beat_start) % TWELFTHS_PER_BEAT in _TICK_TWELFTHS]
    return _cut(seg, (on_tick or options)[0])


def tokens_to_abc(
    tokens,
    title: str = "music-attr-vae",
    key: str = "C",
    reference: int = 1,
    qpm: float = measures.DEFAULT_QPM,
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
    arr = measures.check_tokens(tokens)
    if arr.shape[0] == 0:
        raise ValueError("tokens_to_abc needs at least one measure")
    if key == "auto":
        key = guess_key(arr, transpose)
    bars = measure_segments(arr)
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

