"""Token measures -> piano-roll pictures and MIDI files (ABC text: ``serving/abc_writer.py``).

Everything here works on token measures of shape (N, 24) (see
``data/codec.py``) laid end to end as one 4/4 passage, so the same code
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

from typing import List, Optional, Sequence, Tuple

import note_seq
import pretty_midi

from music_attr_vae import fileio
from music_attr_vae.data.codec import CODEC, Segment

TWELFTHS_PER_BEAT = CODEC.TWELFTHS_PER_BEAT


def pitch_bounds(tokens, transpose: int = 0) -> Optional[Tuple[int, int]]:
    """(lowest, highest) sounding MIDI pitch of token measures, or None without notes."""
    arr = CODEC.check_tokens(tokens)
    onsets = arr[arr < CODEC.num_pitches]
    if onsets.size == 0:
        return None
    return int(onsets.min()) + CODEC.min_pitch + transpose, int(onsets.max()) + CODEC.min_pitch + transpose


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
    bars = CODEC.segments(tokens)
    n = len(bars)
    segments = [s for bar in bars for s in bar]
    for seg in segments:
        if not seg.is_rest:
            seg.pitch += int(transpose)
    labels = list(bar_labels) if bar_labels is not None else [f"bar {m + 1}" for m in range(n)]
    if len(labels) != n:
        raise ValueError(f"bar_labels has {len(labels)} labels for {n} measures")
    low, high = _pitch_window(segments, pitch_limits)
    beats_total = n * CODEC.beats_per_measure
    _draw_grid(ax, low, high, beats_total, highlight)
    _draw_segments(ax, segments, low, high)
    ax.set_xlim(0, beats_total)
    ax.set_ylim(low - 0.5, high + 0.5)
    ax.set_xticks([m * CODEC.beats_per_measure for m in range(n)])
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
        ax.axvspan(m * CODEC.beats_per_measure, (m + 1) * CODEC.beats_per_measure, color="gold", alpha=0.25, lw=0)


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
    n = max(CODEC.check_tokens(r).shape[0] for r in rows)
    options = list(options) if options is not None else [{}] * len(rows)
    fig = _new_figure(piano_roll_width(n), 2.9 * len(rows) + 0.3)
    for i, (row, title, opts) in enumerate(zip(rows, titles, options)):
        draw_piano_roll(fig.add_subplot(len(rows), 1, i + 1), row, title=title, **opts)
    fig.tight_layout()
    save_figure(fig, path)


def write_midi(tokens, path: str, qpm: float = CODEC.DEFAULT_QPM, transpose: int = 0) -> None:
    """Write token measures to a MIDI file (atomically), every pitch moved by ``transpose`` semitones."""
    seq = CODEC.to_sequence(tokens, qpm=qpm, transpose=transpose)
    if any(not 0 <= n.pitch <= 127 for n in seq.notes):
        raise ValueError(f"transposing by {transpose:+d} puts a note outside MIDI 0..127")
    with fileio.atomic_path(path, ".mid") as tmp:
        note_seq.sequence_proto_to_midi_file(seq, tmp)
