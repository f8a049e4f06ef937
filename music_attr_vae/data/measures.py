"""NoteSequence <-> 24-tick token measures, and the fixed vocabulary.

A measure is one bar of 4/4 (also written ``C``, ``C|`` or ``2/2``): 4 quarter
beats x 6 ticks.  Inside a beat the ticks sit at the beat fractions
0, 1/4, 1/3, 1/2, 2/3 and 3/4, so sixteenth notes and eighth-note triplets both
land on the grid.  A measure with a note onset anywhere else is dropped and
counted under ``off_grid_onset``.

Vocabulary (one token per tick)::

    0 .. 29   note onset, MIDI pitch 55 .. 84
    30        REST  (a rest starts on this tick)
    31        HOLD  (the note or rest of the previous tick continues)

**Notes tied over the barline.**  Every measure is self-contained: a note that
sounds across a barline is cut at the barline and struck again, with the same
pitch, on tick 0 of the next measure.  A measure therefore never starts with
HOLD in the data; a HOLD on tick 0 (which the decoder may still emit) is read
back by :func:`tokens_to_sequence` as "keep sounding what the previous
measure ended with", i.e. a tie.  Likewise a rest that continues over the
barline becomes a REST on tick 0.

Pitches are kept as raw MIDI numbers in "grids" (``int16``, ``REST_MARK`` and
``HOLD_MARK`` for the other two tokens) until a transposition is chosen, so
that preparing all transpositions of a tune costs one pass over its notes.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np
from note_seq.protobuf import music_pb2

from music_attr_vae import fileio

MIN_PITCH = 55
MAX_PITCH = 84
NUM_PITCHES = MAX_PITCH - MIN_PITCH + 1  # 30
REST = NUM_PITCHES  # 30
HOLD = NUM_PITCHES + 1  # 31
VOCAB_SIZE = NUM_PITCHES + 2  # 32

BEATS_PER_MEASURE = 4
TICKS_PER_BEAT = 6
TICKS_PER_MEASURE = BEATS_PER_MEASURE * TICKS_PER_BEAT  # 24
# Position of each tick inside its (quarter-note) beat.
TICK_FRACTIONS = (0.0, 1.0 / 4, 1.0 / 3, 1.0 / 2, 2.0 / 3, 3.0 / 4)
# Start of every tick of a measure, in quarter-note beats, plus the bar end.
TICK_STARTS = np.array(
    [b + f for b in range(BEATS_PER_MEASURE) for f in TICK_FRACTIONS] + [float(BEATS_PER_MEASURE)]
)

DEFAULT_QPM = 120.0
FOUR_FOUR_METERS = ((4, 4), (2, 2))

# Marks used in grids (raw-MIDI measures) for the two non-pitch tokens.
REST_MARK = -1
HOLD_MARK = -2

_EPS = 1e-4


def token_name(token: int) -> str:
    """Human-readable name of a token: a MIDI pitch number, 'REST' or 'HOLD'."""
    token = int(token)
    if 0 <= token < NUM_PITCHES:
        return str(MIN_PITCH + token)
    if token == REST:
        return "REST"
    if token == HOLD:
        return "HOLD"
    raise ValueError(f"token {token} is outside the vocabulary 0..{VOCAB_SIZE - 1}")


def vocabulary() -> Dict[str, object]:
    """The vocabulary as a JSON-friendly dict (written next to every dataset and model)."""
    return {
        "size": VOCAB_SIZE,
        "min_pitch": MIN_PITCH,
        "max_pitch": MAX_PITCH,
        "rest": REST,
        "hold": HOLD,
        "ticks_per_measure": TICKS_PER_MEASURE,
        "ticks_per_beat": TICKS_PER_BEAT,
        "tick_fractions": ["0", "1/4", "1/3", "1/2", "2/3", "3/4"],
        "tokens": [token_name(t) for t in range(VOCAB_SIZE)],
    }


@dataclasses.dataclass
class GridResult:
    """Measures of one NoteSequence, before transposition."""

    grids: np.ndarray  # (M, 24) int16: MIDI pitch at onsets, REST_MARK, HOLD_MARK
    measure_indices: np.ndarray  # (M,) int32: index of the bar in the tune (0 = first full bar)
    dropped: collections.Counter  # reason -> number of measures dropped


# The same boundaries as a Python list: per-note lookups with bisect avoid a NumPy call per note
# (these two helpers ran ~100,000 times per corpus and were a third of prepare's time).
_TICK_LIST = TICK_STARTS.tolist()


def _tick_of(offset: float) -> Optional[int]:
    """Tick index of an onset ``offset`` beats into the measure, or None if off the grid."""
    idx = bisect.bisect_left(_TICK_LIST, offset - _EPS)
    if idx < TICKS_PER_MEASURE and abs(_TICK_LIST[idx] - offset) < _EPS:
        return idx
    return None


def _nearest_boundary(offset: float) -> int:
    """Index (0..24) of the tick boundary nearest to ``offset`` beats (for note ends); the lower one on a tie."""
    idx = bisect.bisect_left(_TICK_LIST, offset)
    if idx == 0:
        return 0
    if idx == len(_TICK_LIST):
        return idx - 1
    return idx - 1 if offset - _TICK_LIST[idx - 1] <= _TICK_LIST[idx] - offset else idx


def _meter_segments(sequence: music_pb2.NoteSequence, total_beats: float, beat_sec: float):
    """(start_beat, end_beat, numerator, denominator) for each time-signature span."""
    sigs = sorted(sequence.time_signatures, key=lambda ts: ts.time)
    if not sigs or sigs[0].time * 1 / beat_sec > _EPS:
        first = (0.0, 4, 4)
        spans = [first] + [(ts.time / beat_sec, ts.numerator, ts.denominator) for ts in sigs]
    else:
        spans = [(ts.time / beat_sec, ts.numerator, ts.denominator) for ts in sigs]
    # Later signatures at the same time win.
    dedup: List = []
    for span in spans:
        if dedup and abs(dedup[-1][0] - span[0]) < _EPS:
            dedup[-1] = span
        else:
            dedup.append(span)
    out = []
    for i, (start, num, den) in enumerate(dedup):
        end = dedup[i + 1][0] if i + 1 < len(dedup) else total_beats
        if end - start > _EPS:
            out.append((start, end, num, den))
    return out


def sequence_to_grids(sequence: music_pb2.NoteSequence) -> GridResult:
    """Cut a monophonic NoteSequence into 4/4 measures on the 24-tick grid.

    Bars are counted from time 0 of the sequence and from every time-signature
    change, so readers must align the first full bar to a barline (pickups
    start later than 0).  Bars of other meters are dropped (``not_4_4``), as
    are bars with an onset off the grid (``off_grid_onset``) and bars with no
    note at all (``empty``).  Simultaneous notes keep the highest pitch; a
    later onset cuts a sounding note short.
    """
    qpm = sequence.tempos[0].qpm if sequence.tempos else DEFAULT_QPM
    beat_sec = 60.0 / qpm
    notes = sorted(
        ((n.start_time / beat_sec, n.end_time / beat_sec, n.pitch) for n in sequence.notes if not n.is_drum),
        key=lambda x: (x[0], -x[2]),
    )
    dropped: collections.Counter = collections.Counter()
    if not notes:
        return GridResult(np.zeros((0, TICKS_PER_MEASURE), np.int16), np.zeros((0,), np.int32), dropped)
    # Drop duplicated onsets (chords): keep the highest pitch (sorted first).
    mono = []
    for start, end, pitch in notes:
        if mono and abs(mono[-1][0] - start) < _EPS:
            continue
        mono.append([start, end, pitch])
    # A later onset cuts the previous note.
    for i in range(len(mono) - 1):
        mono[i][1] = min(mono[i][1], mono[i + 1][0])
    total_beats = max(end for _, end, _ in mono)
    starts = [n[0] for n in mono]

    grids, indices = [], []
    bar_index = 0
    for seg_start, seg_end, num, den in _meter_segments(sequence, total_beats, beat_sec):
        bar_len = num * 4.0 / den
        n_bars = int(np.ceil((seg_end - seg_start) / bar_len - _EPS))
        if (num, den) not in FOUR_FOUR_METERS:
            dropped["not_4_4"] += n_bars
            bar_index += n_bars
            continue
        for b in range(n_bars):
            m0 = seg_start + b * bar_len
            m1 = m0 + bar_len
            grid = _measure_grid(mono, starts, m0, m1)
            if isinstance(grid, str):
                dropped[grid] += 1
            else:
                grids.append(grid)
                indices.append(bar_index)
            bar_index += 1
    if grids:
        return GridResult(np.stack(grids).astype(np.int16), np.array(indices, np.int32), dropped)
    return GridResult(np.zeros((0, TICKS_PER_MEASURE), np.int16), np.zeros((0,), np.int32), dropped)


def _measure_grid(mono, starts: List[float], m0: float, m1: float):
    """One measure's grid, or the name of the reason it is dropped."""
    grid = np.full(TICKS_PER_MEASURE, HOLD_MARK, np.int16)
    sounding = np.zeros(TICKS_PER_MEASURE, bool)
    lo = max(bisect.bisect_left(starts, m0 - _EPS) - 1, 0)
    hi = bisect.bisect_left(starts, m1 - _EPS)
    any_note = False
    for start, end, pitch in mono[lo:hi]:
        if end <= m0 + _EPS or start >= m1 - _EPS:
            continue
        if start < m0 - _EPS:  # tied over the barline: struck again on tick 0
            tick = 0
        else:
            tick = _tick_of(start - m0)
            if tick is None:
                return "off_grid_onset"
        stop = _nearest_boundary(min(end, m1) - m0)
        stop = max(stop, tick + 1)
        grid[tick] = pitch
        sounding[tick:stop] = True
        any_note = True
    if not any_note:
        return "empty"
    # Silence: a REST on the first silent tick after sound (or at tick 0).
    for t in range(TICKS_PER_MEASURE):
        if not sounding[t] and (t == 0 or sounding[t - 1]):
            grid[t] = REST_MARK
    return grid


def grid_pitch_bounds(grids: np.ndarray):
    """(lowest, highest) MIDI pitch in a stack of grids, or None when there are no notes."""
    pitches = grids[grids >= 0]
    if pitches.size == 0:
        return None
    return int(pitches.min()), int(pitches.max())


def valid_shifts(grids: np.ndarray, max_shift: int = 12) -> List[int]:
    """Every transposition in [-max_shift, max_shift] that keeps all notes in MIN..MAX_PITCH."""
    bounds = grid_pitch_bounds(grids)
    if bounds is None:
        return []
    low, high = bounds
    return [s for s in range(-max_shift, max_shift + 1) if low + s >= MIN_PITCH and high + s <= MAX_PITCH]


def grids_to_tokens(grids: np.ndarray, shift: int = 0) -> np.ndarray:
    """Transpose grids by ``shift`` semitones and map them to tokens.

    Raises ValueError when a pitch leaves the vocabulary range.
    """
    grids = np.asarray(grids)
    tokens = np.where(grids == REST_MARK, REST, HOLD).astype(np.int32)
    onset = grids >= 0
    pitch = grids.astype(np.int32) + shift
    if np.any(onset & ((pitch < MIN_PITCH) | (pitch > MAX_PITCH))):
        raise ValueError(f"transposition {shift:+d} puts a pitch outside {MIN_PITCH}..{MAX_PITCH}")
    tokens[onset] = pitch[onset] - MIN_PITCH
    return tokens


def check_tokens(tokens) -> np.ndarray:
    """Validate a token array of shape (24,) or (N, 24); returns it as (N, 24) int32."""
    arr = np.asarray(tokens)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != TICKS_PER_MEASURE:
        raise ValueError(f"tokens must have shape (N, {TICKS_PER_MEASURE}); got {np.asarray(tokens).shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"tokens must lie in 0..{VOCAB_SIZE - 1}; got values {arr.min()}..{arr.max()}")
    return arr.astype(np.int32)


def tokens_to_sequence(
    tokens, qpm: float = DEFAULT_QPM, velocity: int = 90, program: int = 0
) -> music_pb2.NoteSequence:
    """Concatenate token measures (N, 24) into one NoteSequence in 4/4.

    A HOLD continues the current note or rest, across barlines too; a HOLD with
    nothing before it is silence.
    """
    arr = check_tokens(tokens)
    beat_sec = 60.0 / qpm
    seq = music_pb2.NoteSequence()
    seq.ticks_per_quarter = 480  # divisible by 3 and 4: every tick of the grid is exact in MIDI
    seq.tempos.add(time=0.0, qpm=qpm)
    seq.time_signatures.add(time=0.0, numerator=4, denominator=4)
    current = None  # [pitch, start_beat]

    def close(end_beat):
        if current is not None:
            seq.notes.add(
                pitch=MIN_PITCH + current[0],
                velocity=velocity,
                program=program,
                start_time=current[1] * beat_sec,
                end_time=end_beat * beat_sec,
            )

    for m, measure in enumerate(arr):
        base = m * BEATS_PER_MEASURE
        for t, tok in enumerate(measure):
            at = base + TICK_STARTS[t]
            if tok < NUM_PITCHES:
                close(at)
                current = [int(tok), at]
            elif tok == REST:
                close(at)
                current = None
    close(len(arr) * BEATS_PER_MEASURE)
    seq.total_time = len(arr) * BEATS_PER_MEASURE * beat_sec
    return seq


def tokens_to_midi_file(tokens, path: str, qpm: float = DEFAULT_QPM) -> None:
    """Write token measures to a MIDI file atomically."""
    import note_seq

    with fileio.atomic_path(path, ".mid") as tmp:
        note_seq.sequence_proto_to_midi_file(tokens_to_sequence(tokens, qpm=qpm), tmp)


def describe(tokens: Sequence[int]) -> str:
    """Compact text form of one measure, e.g. '67 HOLD 69 ... | ...' split by beats."""
    arr = check_tokens(tokens)[0]
    beats = [
        " ".join(token_name(t) for t in arr[b * TICKS_PER_BEAT : (b + 1) * TICKS_PER_BEAT])
        for b in range(BEATS_PER_MEASURE)
    ]
    return " | ".join(beats)
