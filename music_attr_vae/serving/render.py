"""Token measures -> piano-roll pictures and MIDI files (ABC text: ``serving/abc_writer.py``).

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
from typing import List, Optional, Sequence, Tuple

import pretty_midi

from music_attr_vae import fileio
from music_attr_vae.data import measures

TWELFTHS_PER_BEAT = 12
# Start of each of the 6 ticks of a beat, in twelfths of the beat.
TICK_TWELFTHS = (0, 3, 4, 6, 8, 9)
TWELFTHS_PER_MEASURE = measures.BEATS_PER_MEASURE * TWELFTHS_PER_BEAT



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
    return measure * TWELFTHS_PER_MEASURE + beat * TWELFTHS_PER_BEAT + TICK_TWELFTHS[sub]


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
        bar_start = m * TWELFTHS_PER_MEASURE
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
            seg.end = nxt.start if nxt is not None else bar_start + TWELFTHS_PER_MEASURE
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
