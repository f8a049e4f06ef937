"""The measure codec: the 24-tick grid, the token vocabulary, and NoteSequence <-> tokens both ways.

:class:`MeasureCodec` is the one place that knows how a bar of melody becomes
24 tokens and back.  The model is sized from it (``vocab_size``,
``ticks_per_measure``), the SavedModel stores it in its metadata
(:meth:`MeasureCodec.to_json`) and the client rebuilds it from there
(:meth:`MeasureCodec.from_json`), and the readers, ``prepare``, ``render`` and
``edit`` all convert through it.  ``CODEC`` is the codec every model of this
package uses.

**Grid.**  A measure is one bar of 4/4 (also written ``C``, ``C|`` or ``2/2``):
4 quarter beats x 6 ticks.  Inside a beat the ticks start at 0, 3, 4, 6, 8
and 9 twelfths of the beat (0, 1/4, 1/3, 1/2, 2/3, 3/4), so sixteenth notes
and eighth-note triplets both land on the grid.  Positions are whole twelfths,
so no floating point enters the ABC writer.  A measure with a note onset
anywhere else is dropped and counted under ``off_grid_onset``.

**Vocabulary** (one token per tick)::

    0 .. 29   note onset, MIDI pitch 55 .. 84
    30        REST  (a rest starts on this tick)
    31        HOLD  (the note or rest of the previous tick continues)

**Notes tied over the barline.**  Every measure is self-contained: a note that
sounds across a barline is cut at the barline and struck again, with the same
pitch, on tick 0 of the next measure.  A measure therefore never starts with
HOLD in the data; a HOLD on tick 0 (which the decoder may still emit) is read
back as "keep sounding what the previous measure ended with", i.e. a tie.
Likewise a rest that continues over the barline becomes a REST on tick 0.

**Grids and transposition.**  :meth:`MeasureCodec.to_grids` keeps pitches as
raw MIDI numbers ("grids", ``int16``, with ``REST_MARK``/``HOLD_MARK`` for the
other two tokens) until a transposition is chosen
(:meth:`~MeasureCodec.valid_shifts`, :meth:`~MeasureCodec.grids_to_tokens`),
so all transpositions of a tune cost one pass over its notes.  In the token
domain a transposition by ``k`` adds ``k`` to every pitch token
(:meth:`~MeasureCodec.transpose`; ``data/loader.py`` does the same as a
``tf.data`` map).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from typing import TYPE_CHECKING, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # note_seq costs ~0.8 s to import; training and serving never need it
    from note_seq.protobuf import music_pb2

# Marks used in grids (raw-MIDI measures) for the two non-pitch tokens.
REST_MARK = -1
HOLD_MARK = -2
DEFAULT_QPM = 120.0
FOUR_FOUR_METERS = ((4, 4), (2, 2))

_EPS = 1e-4


@dataclasses.dataclass
class GridResult:
    """Measures of one NoteSequence, before transposition."""

    grids: np.ndarray  # (M, 24) int16: MIDI pitch at onsets, REST_MARK, HOLD_MARK
    measure_indices: np.ndarray  # (M,) int32: index of the bar in the tune (0 = first full bar)
    dropped: collections.Counter  # reason -> number of measures dropped


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


@dataclasses.dataclass(frozen=True)
class MeasureCodec:
    """Grid, vocabulary and conversions of single 4/4 measures (see the module docstring).

    The pitch range is a field (a model's metadata records it); the grid is
    fixed, since the hierarchical decoder is built around 4 beats of 6 ticks.
    """

    min_pitch: int = 55
    max_pitch: int = 84

    BEATS_PER_MEASURE: ClassVar[int] = 4
    REST_MARK: ClassVar[int] = REST_MARK
    HOLD_MARK: ClassVar[int] = HOLD_MARK
    DEFAULT_QPM: ClassVar[float] = DEFAULT_QPM
    METERS: ClassVar[Tuple[Tuple[int, int], ...]] = FOUR_FOUR_METERS  # time signatures read as 4/4
    TICK_TWELFTHS: ClassVar[Tuple[int, ...]] = (0, 3, 4, 6, 8, 9)  # tick starts inside a beat
    TWELFTHS_PER_BEAT: ClassVar[int] = 12

    def __post_init__(self):
        if not 0 <= self.min_pitch < self.max_pitch <= 127:
            raise ValueError(f"pitch range {self.min_pitch}..{self.max_pitch} is not inside MIDI 0..127")
        starts = [b + t / self.TWELFTHS_PER_BEAT for b in range(self.BEATS_PER_MEASURE) for t in self.TICK_TWELFTHS]
        object.__setattr__(self, "_tick_list", starts + [float(self.BEATS_PER_MEASURE)])

    # ------------------------------------------------------------ sizes

    @property
    def num_pitches(self) -> int:
        return self.max_pitch - self.min_pitch + 1

    @property
    def rest(self) -> int:
        return self.num_pitches

    @property
    def hold(self) -> int:
        return self.num_pitches + 1

    @property
    def vocab_size(self) -> int:
        return self.num_pitches + 2

    @property
    def beats_per_measure(self) -> int:
        return self.BEATS_PER_MEASURE

    @property
    def ticks_per_beat(self) -> int:
        return len(self.TICK_TWELFTHS)

    @property
    def ticks_per_measure(self) -> int:
        return self.BEATS_PER_MEASURE * self.ticks_per_beat

    @property
    def twelfths_per_measure(self) -> int:
        return self.BEATS_PER_MEASURE * self.TWELFTHS_PER_BEAT

    @property
    def tick_fractions(self) -> Tuple[float, ...]:
        """Start of each tick inside its beat, as a fraction of the beat."""
        return tuple(t / self.TWELFTHS_PER_BEAT for t in self.TICK_TWELFTHS)

    @property
    def tick_starts(self) -> np.ndarray:
        """Start of every tick of a measure in quarter-note beats, plus the bar end (25 values)."""
        return np.array(self._tick_list)

    def tick_twelfths(self, measure: int, tick: int) -> int:
        """Position of ``tick`` of ``measure`` in twelfths of a beat from the start of the passage."""
        beat, sub = divmod(int(tick), self.ticks_per_beat)
        return measure * self.twelfths_per_measure + beat * self.TWELFTHS_PER_BEAT + self.TICK_TWELFTHS[sub]

    # ------------------------------------------------------------ vocabulary

    def token_name(self, token: int) -> str:
        """Human-readable name of a token: a MIDI pitch number, 'REST' or 'HOLD'."""
        token = int(token)
        if 0 <= token < self.num_pitches:
            return str(self.min_pitch + token)
        if token == self.rest:
            return "REST"
        if token == self.hold:
            return "HOLD"
        raise ValueError(f"token {token} is outside the vocabulary 0..{self.vocab_size - 1}")

    def to_json(self) -> Dict[str, object]:
        """The codec as a JSON-friendly dict (written next to every dataset and into every model)."""
        return {
            "size": self.vocab_size,
            "min_pitch": self.min_pitch,
            "max_pitch": self.max_pitch,
            "rest": self.rest,
            "hold": self.hold,
            "ticks_per_measure": self.ticks_per_measure,
            "ticks_per_beat": self.ticks_per_beat,
            "tick_fractions": ["0", "1/4", "1/3", "1/2", "2/3", "3/4"],
            "tokens": [self.token_name(t) for t in range(self.vocab_size)],
        }

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> "MeasureCodec":
        """The codec a :meth:`to_json` dict describes; ValueError if its grid is not this codec's grid."""
        codec = cls(int(data["min_pitch"]), int(data["max_pitch"]))
        own = codec.to_json()
        for key in ("size", "rest", "hold", "ticks_per_measure", "ticks_per_beat"):
            if key in data and int(data[key]) != own[key]:
                raise ValueError(f"vocabulary field {key}={data[key]} does not match the codec ({own[key]})")
        return codec

    def check_tokens(self, tokens) -> np.ndarray:
        """Validate a token array of shape (24,) or (N, 24); returns it as (N, 24) int32."""
        arr = np.asarray(tokens)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.ticks_per_measure:
            raise ValueError(
                f"tokens must have shape (N, {self.ticks_per_measure}); got {np.asarray(tokens).shape}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"tokens must lie in 0..{self.vocab_size - 1}; got values {arr.min()}..{arr.max()}")
        return arr.astype(np.int32)

    def describe(self, tokens: Sequence[int]) -> str:
        """Compact text form of one measure, e.g. '67 HOLD 69 ... | ...' split by beats."""
        arr = self.check_tokens(tokens)[0]
        k = self.ticks_per_beat
        return " | ".join(
            " ".join(self.token_name(t) for t in arr[b * k : (b + 1) * k]) for b in range(self.BEATS_PER_MEASURE)
        )

    # ------------------------------------------------------------ NoteSequence -> grids -> tokens

    def to_grids(self, sequence: music_pb2.NoteSequence) -> GridResult:
        """Cut a monophonic NoteSequence into 4/4 measures on the grid (raw MIDI pitches).

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
        mono = []
        for start, end, pitch in notes:  # chords: keep the highest pitch (sorted first)
            if mono and abs(mono[-1][0] - start) < _EPS:
                continue
            mono.append([start, end, pitch])
        for i in range(len(mono) - 1):  # a later onset cuts the previous note
            mono[i][1] = min(mono[i][1], mono[i + 1][0])
        grids, indices = [], []
        if mono:
            total_beats = max(end for _, end, _ in mono)
            starts = [n[0] for n in mono]
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
                    grid = self._measure_grid(mono, starts, m0, m0 + bar_len)
                    if isinstance(grid, str):
                        dropped[grid] += 1
                    else:
                        grids.append(grid)
                        indices.append(bar_index)
                    bar_index += 1
        if grids:
            return GridResult(np.stack(grids).astype(np.int16), np.array(indices, np.int32), dropped)
        return GridResult(np.zeros((0, self.ticks_per_measure), np.int16), np.zeros((0,), np.int32), dropped)

    def _tick_of(self, offset: float) -> Optional[int]:
        """Tick index of an onset ``offset`` beats into the measure, or None if off the grid."""
        ticks = self._tick_list
        idx = bisect.bisect_left(ticks, offset - _EPS)
        if idx < self.ticks_per_measure and abs(ticks[idx] - offset) < _EPS:
            return idx
        return None

    def _nearest_boundary(self, offset: float) -> int:
        """Index (0..24) of the tick boundary nearest to ``offset`` beats (for note ends); the lower one on a tie."""
        ticks = self._tick_list
        idx = bisect.bisect_left(ticks, offset)
        if idx == 0:
            return 0
        if idx == len(ticks):
            return idx - 1
        return idx - 1 if offset - ticks[idx - 1] <= ticks[idx] - offset else idx

    def _measure_grid(self, mono, starts: List[float], m0: float, m1: float):
        """One measure's grid, or the name of the reason it is dropped."""
        n_ticks = self.ticks_per_measure
        grid = np.full(n_ticks, HOLD_MARK, np.int16)
        sounding = np.zeros(n_ticks, bool)
        lo = max(bisect.bisect_left(starts, m0 - _EPS) - 1, 0)
        hi = bisect.bisect_left(starts, m1 - _EPS)
        any_note = False
        for start, end, pitch in mono[lo:hi]:
            if end <= m0 + _EPS or start >= m1 - _EPS:
                continue
            if start < m0 - _EPS:  # tied over the barline: struck again on tick 0
                tick = 0
            else:
                tick = self._tick_of(start - m0)
                if tick is None:
                    return "off_grid_onset"
            stop = max(self._nearest_boundary(min(end, m1) - m0), tick + 1)
            grid[tick] = pitch
            sounding[tick:stop] = True
            any_note = True
        if not any_note:
            return "empty"
        # Silence: a REST on the first silent tick after sound (or at tick 0).
        for t in range(n_ticks):
            if not sounding[t] and (t == 0 or sounding[t - 1]):
                grid[t] = REST_MARK
        return grid

    @staticmethod
    def grid_pitch_bounds(grids: np.ndarray) -> Optional[Tuple[int, int]]:
        """(lowest, highest) MIDI pitch in a stack of grids, or None when there are no notes."""
        pitches = grids[grids >= 0]
        if pitches.size == 0:
            return None
        return int(pitches.min()), int(pitches.max())

    def valid_shifts(self, grids: np.ndarray, max_shift: int = 12) -> List[int]:
        """Every transposition in [-max_shift, max_shift] that keeps all notes in the pitch range."""
        bounds = self.grid_pitch_bounds(grids)
        if bounds is None:
            return []
        low, high = bounds
        return [s for s in range(-max_shift, max_shift + 1) if low + s >= self.min_pitch and high + s <= self.max_pitch]

    def grids_to_tokens(self, grids: np.ndarray, shift: int = 0) -> np.ndarray:
        """Transpose grids by ``shift`` semitones and map them to tokens.

        Raises ValueError when a pitch leaves the vocabulary range.
        """
        grids = np.asarray(grids)
        tokens = np.where(grids == REST_MARK, self.rest, self.hold).astype(np.int32)
        onset = grids >= 0
        pitch = grids.astype(np.int32) + shift
        if np.any(onset & ((pitch < self.min_pitch) | (pitch > self.max_pitch))):
            raise ValueError(f"transposition {shift:+d} puts a pitch outside {self.min_pitch}..{self.max_pitch}")
        tokens[onset] = pitch[onset] - self.min_pitch
        return tokens

    def transpose(self, tokens, shift: int) -> np.ndarray:
        """Token measures moved by ``shift`` semitones; ValueError if a pitch leaves the range."""
        arr = self.check_tokens(tokens)
        pitch = arr < self.num_pitches
        moved = np.where(pitch, arr + int(shift), arr)
        if np.any(pitch & ((moved < 0) | (moved >= self.num_pitches))):
            raise ValueError(f"transposition {int(shift):+d} puts a pitch outside {self.min_pitch}..{self.max_pitch}")
        return moved.astype(np.int32)

    # ------------------------------------------------------------ tokens -> notes -> NoteSequence

    def segments(self, tokens) -> List[List[Segment]]:
        """Split token measures (laid end to end) into notes and rests, one list per measure.

        Segments never cross a barline: a note held over the barline ends the first
        measure's list and starts the next one with ``tied_in=True``.  Consecutive
        rests merge (a REST after a rest adds nothing audible).  A HOLD with nothing
        before it (tick 0 of the first measure) is a rest.
        """
        arr = self.check_tokens(tokens)
        out: List[List[Segment]] = []
        current: Optional[Segment] = None
        for m, row in enumerate(arr):
            bar: List[Segment] = []
            for t, tok in enumerate(row):
                at = self.tick_twelfths(m, t)
                if tok < self.num_pitches:
                    current = Segment(self.min_pitch + int(tok), at, at)
                elif tok == self.rest:
                    if current is None or not current.is_rest or t == 0:
                        current = Segment(None, at, at)
                elif current is None:  # HOLD with nothing before it: silence.
                    current = Segment(None, at, at)
                elif t == 0:  # HOLD over the barline: continue in this measure.
                    current = Segment(current.pitch, at, at, tied_in=not current.is_rest)
                if not bar or bar[-1] is not current:
                    bar.append(current)
            bar_end = (m + 1) * self.twelfths_per_measure
            for seg, nxt in zip(bar, bar[1:] + [None]):  # close every segment at the next one's start
                seg.end = nxt.start if nxt is not None else bar_end
            out.append(bar)
        return out

    def to_sequence(
        self, tokens, qpm: float = DEFAULT_QPM, velocity: int = 90, program: int = 0, transpose: int = 0
    ) -> music_pb2.NoteSequence:
        """Concatenate token measures (N, 24) into one NoteSequence in 4/4.

        A HOLD continues the current note or rest, across barlines too (a tie);
        a HOLD with nothing before it is silence.  ``transpose`` moves every
        pitch by that many semitones (to play a tune back in its own key).
        """
        bars = self.segments(tokens)
        sec = 60.0 / qpm / self.TWELFTHS_PER_BEAT
        from note_seq.protobuf import music_pb2

        seq = music_pb2.NoteSequence()
        seq.ticks_per_quarter = 480  # divisible by 3 and 4: every tick of the grid is exact in MIDI
        seq.tempos.add(time=0.0, qpm=qpm)
        seq.time_signatures.add(time=0.0, numerator=4, denominator=4)
        note = None
        for seg in (s for bar in bars for s in bar):
            if seg.is_rest:
                note = None
            elif seg.tied_in and note is not None:
                note.end_time = seg.end * sec
            else:
                note = seq.notes.add(pitch=seg.pitch + transpose, velocity=velocity, program=program,
                                     start_time=seg.start * sec, end_time=seg.end * sec)
        seq.total_time = len(bars) * self.twelfths_per_measure * sec
        return seq


def _meter_segments(sequence: music_pb2.NoteSequence, total_beats: float, beat_sec: float):
    """(start_beat, end_beat, numerator, denominator) for each time-signature span."""
    sigs = sorted(sequence.time_signatures, key=lambda ts: ts.time)
    if not sigs or sigs[0].time * 1 / beat_sec > _EPS:
        spans = [(0.0, 4, 4)] + [(ts.time / beat_sec, ts.numerator, ts.denominator) for ts in sigs]
    else:
        spans = [(ts.time / beat_sec, ts.numerator, ts.denominator) for ts in sigs]
    dedup: List = []  # later signatures at the same time win
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


CODEC = MeasureCodec()
