"""MIDI bytes -> one melody on the readers' qpm-120 time base, snapped to the grid and bar-aligned.

Real MIDI files differ from rendered scores in three ways this reader undoes:

1. **Melody selection.**  note_seq splits a file into parts (one per track,
   channel and program).  Drum parts are never a melody.  The melody is the
   monophonic part (at most :data:`MAX_OVERLAP_FRACTION` of its notes start
   while another of its notes sounds) with the most notes in MIDI
   ``MIN_PITCH..MAX_PITCH``; with none, a part with a few double stops (up to
   :data:`MAX_TOP_LINE_OVERLAP`) is read as its top line; ``melody_track`` (a track name, or a part number
   as note_seq counts them) and ``melody_program`` (a General MIDI program)
   restrict the choice.  What was dropped is recorded (``drums``,
   ``polyphonic``, ``not_selected``).
2. **Onsets off the grid.**  Times follow the file's tempo map, rescaled so a
   quarter lasts 0.5 s.  The melody is quantised with
   ``note_seq.sequences_lib.quantize_note_sequence`` at :data:`STEPS_PER_QUARTER`
   steps per quarter (16ths and 8th-note triplets).  An onset within
   :data:`ONSET_TOLERANCE_STEPS` of a step moves onto it (its release moves to
   the nearest step); any other onset (32nds, quintuplets) keeps its time, so
   ``codec.py`` drops its bar as ``off_grid_onset``.  16th-note triplets
   land on steps the 24-tick measure grid lacks and are dropped there too.
3. **Bar phase.**  ``codec.py`` counts bars from time 0.  A file whose first
   note starts after some silence is taken at its word (``phase_source:
   file``).  When the first note sits at time 0 in 4/4 or 2/2 the first
   downbeat is searched (``detected``): each of the 48 steps of a bar is scored
   by a log-linear metre model, the sum over notes of a weight for (metrical
   level of the onset, inter-onset interval), plus a prior on the pickup
   length, plus the same weights on the onsets of the other (accompaniment)
   parts, which change harmony on strong beats.  The weights were fitted on
   the 4/4 tunes of O'Neill's 1850, Aird's airs and Essen
   (``bench/bench_midi_agreement.py --fit-meter``), not on the corpus the
   agreement is measured on.  The
   sequence is then delayed so the first downbeat falls on a barline.

Every decision is stored in the NoteSequence as one text annotation
(:func:`read_report`): melody part, parts dropped, onsets moved and by how much,
the pickup length and where it came from.  Skip reasons: ``bad_midi``,
``no_notes``, ``midi_polyphonic``, ``midi_no_melody`` (the flags match no part).
"""

from __future__ import annotations

import bisect
import collections
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from note_seq.protobuf import music_pb2

from music_attr_vae.data import abc_reader
from music_attr_vae.data.abc_reader import SkipTune
from music_attr_vae.data.codec import CODEC

MAX_OVERLAP_FRACTION = 0.05
# With no monophonic part, a part with double stops up to this share of overlapping notes is read as
# its top line (block-chord accompaniment overlaps at 2/3 and more).
MAX_TOP_LINE_OVERLAP = 0.30
_OVERLAP_TOLERANCE_BEATS = 1.0 / 32
STEPS_PER_QUARTER = 12
# An onset this close to a step (in steps: 1/48 of a beat, 10 ticks at 480 per quarter) moves onto it.
ONSET_TOLERANCE_STEPS = 0.25
_BAR_STEPS = 4 * STEPS_PER_QUARTER
REPORT_PREFIX = "music_attr_vae.midi_reader "
MAX_NAME_CHARS = 100

# ---- metre model (fitted on the 4/4 tunes of O'Neill's 1850, Aird's airs and Essen, 3,319 tunes;
# see bench/bench_midi_agreement.py --fit-meter)
# Inter-onset-interval buckets, lower bounds in steps: <3, 3, 4-5, 6, 7-11, 12, 13-23, >=24.
IOI_BUCKETS = (0, 3, 4, 6, 7, 12, 13, 24)
# Log rate of an onset per (metrical level, IOI bucket).  Levels: 0 downbeat, 1 half bar,
# 2 other beats, 3 eighth off-beats, 4 sixteenths, 5 triplet eighths, 6 anything else.
METRE_LOG_RATE = np.array([
    [-10.96, -4.80, -4.97, -2.35, -3.53, -2.30, -3.56, -3.14],
    [-12.05, -5.08, -5.77, -2.38, -3.81, -2.13, -4.13, -3.90],
    [-12.05, -5.48, -5.13, -2.02, -3.47, -2.58, -6.74, -5.62],
    [-10.35, -5.51, -12.05, -2.08, -11.24, -7.50, -7.83, -8.39],
    [-14.13, -4.02, -14.13, -10.22, -6.85, -12.34, -10.40, -11.19],
    [-11.36, -14.13, -5.21, -13.03, -12.05, -14.13, -12.52, -14.13],
    [-12.46, -14.13, -13.85, -14.13, -13.62, -14.13, -14.13, -15.23],
])
# Log prior of the first downbeat's step (= pickup length); every other step gets PICKUP_LOG_PRIOR_OTHER.
PICKUP_LOG_PRIOR = {0: -1.45, 3: -7.43, 6: -2.12, 12: -0.59, 15: -6.74, 18: -3.36, 24: -3.79, 30: -6.51, 36: -4.23,
                    42: -6.18}
PICKUP_LOG_PRIOR_OTHER = -8.12
PRIOR_WEIGHT = 3.0
ACCOMPANIMENT_WEIGHT = 2.0
# A tune starting at time 0 is moved only when its best downbeat beats bar 1 at time 0 by this much (log
# units), so that measures with no metre stay put.  With the O'Neill's-only fit: rewritten Nottingham vs
# clean Jaccard 0.982 with no margin, 0.960 with 5, 0.951 with 8; with the current fit and 5: 0.963.
MOVE_MARGIN = 5.0


def metrical_level(step: int) -> int:
    """Metrical level (0 strongest .. 6) of a step of a 48-step 4/4 bar."""
    step %= _BAR_STEPS
    if step == 0:
        return 0
    if step == _BAR_STEPS // 2:
        return 1
    for level, period in ((2, 12), (3, 6), (4, 3), (5, 4)):
        if step % period == 0:
            return level
    return 6


_LEVELS = np.array([metrical_level(s) for s in range(_BAR_STEPS)])


# ----------------------------------------------------------------------------- time base


class _TempoMap:
    """Seconds -> quarter beats, following every tempo change of a file (120 qpm before the first)."""

    def __init__(self, tempos) -> None:
        changes = sorted((t.time, t.qpm) for t in tempos if t.qpm > 0)
        if not changes or changes[0][0] > 0:
            changes.insert(0, (0.0, 120.0))
        self.times = [t for t, _ in changes]
        self.qpms = [q for _, q in changes]
        self.beats = [0.0]
        for i in range(1, len(changes)):
            self.beats.append(self.beats[-1] + (self.times[i] - self.times[i - 1]) * self.qpms[i - 1] / 60.0)

    def __call__(self, seconds: float) -> float:
        i = max(bisect.bisect_right(self.times, seconds) - 1, 0)
        return self.beats[i] + (seconds - self.times[i]) * self.qpms[i] / 60.0


def _overlap_fraction(notes: Sequence[Sequence[float]]) -> float:
    """Share of (pitch, start, end) notes, sorted by start, that start while an earlier one still sounds."""
    sounding_until = float("-inf")
    overlaps = 0
    for _, start, end in notes:
        if start < sounding_until - _OVERLAP_TOLERANCE_BEATS:
            overlaps += 1
        sounding_until = max(sounding_until, end)
    return overlaps / max(len(notes), 1)


# ----------------------------------------------------------------------------- melody selection


class _Part:
    """The notes of one note_seq instrument (a track/channel/program), in beats."""

    def __init__(self, number: int, program: int, is_drum: bool, name: str) -> None:
        self.number, self.program, self.is_drum, self.name = number, program, is_drum, name
        self.notes: List[Tuple[int, float, float]] = []

    def finish(self) -> None:
        self.notes.sort(key=lambda n: (n[1], -n[0]))
        self.overlap = _overlap_fraction(self.notes)
        self.in_range = sum(CODEC.min_pitch <= p <= CODEC.max_pitch for p, _, _ in self.notes)

    def matches(self, track: Optional[str], program: Optional[int]) -> bool:
        if program is not None and self.program != program:
            return False
        if track is not None:
            wanted = track.strip().lower()
            return wanted == self.name.strip().lower() or wanted == str(self.number)
        return True

    def describe(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"part {self.number}{name} (program {self.program}{', drums' if self.is_drum else ''})"


def _parts(source: music_pb2.NoteSequence, beats: _TempoMap) -> List[_Part]:
    names = {info.instrument: info.name[:MAX_NAME_CHARS] for info in source.instrument_infos}
    parts: Dict[int, _Part] = {}
    for n in source.notes:
        if n.end_time <= n.start_time:
            continue
        part = parts.get(n.instrument)
        if part is None:
            part = parts[n.instrument] = _Part(n.instrument, n.program, n.is_drum, names.get(n.instrument, ""))
        part.notes.append((n.pitch, beats(n.start_time), beats(n.end_time)))
    for part in parts.values():
        part.finish()
    return [parts[k] for k in sorted(parts)]


def select_melody(parts: Sequence[_Part], melody_track: Optional[str] = None,
                  melody_program: Optional[int] = None) -> Tuple[_Part, Dict[str, int]]:
    """The melody part and the count of the other parts by why they were dropped; raises SkipTune."""
    pitched = [p for p in parts if not p.is_drum]
    if not pitched:
        raise SkipTune("no_notes", "no pitched note in the MIDI file")
    candidates = [p for p in pitched if p.matches(melody_track, melody_program)]
    if not candidates:
        wanted = ", ".join(f"{k}={v!r}" for k, v in (("melody_track", melody_track), ("melody_program", melody_program))
                           if v is not None)
        raise SkipTune("midi_no_melody", f"no part matches {wanted}; parts: " + "; ".join(p.describe() for p in pitched))
    mono = [p for p in candidates if p.overlap <= MAX_OVERLAP_FRACTION]
    if not mono:
        mono = [p for p in candidates if p.overlap <= MAX_TOP_LINE_OVERLAP]
    if not mono:
        best = min(candidates, key=lambda p: p.overlap)
        raise SkipTune("midi_polyphonic", f"no monophonic part: {best.overlap:.0%} of the notes of the most "
                       f"melodic one, {best.describe()}, overlap another")
    melody = max(mono, key=lambda p: (p.in_range, len(p.notes), -p.number))
    dropped = collections.Counter()
    for p in parts:
        if p is melody:
            continue
        reason = "drums" if p.is_drum else ("polyphonic" if p.overlap > melody.overlap else "not_selected")
        dropped[reason] += 1
    return melody, dict(dropped)


# ----------------------------------------------------------------------------- quantisation


def quantize_onsets(notes: Sequence[Tuple[int, float, float]]):
    """Snap onsets within ONSET_TOLERANCE_STEPS of the 12-per-quarter grid (note_seq quantiser).

    Returns ``(notes, moved_shifts_in_beats, n_off_grid)``: snapped notes keep
    their step times (release on the nearest step, at least one step long);
    notes too far from any step keep their own times.
    """
    from note_seq import sequences_lib

    seq = music_pb2.NoteSequence()
    seq.tempos.add(time=0.0, qpm=120.0)
    for pitch, start, end in notes:
        seq.notes.add(pitch=pitch, start_time=start * 0.5, end_time=end * 0.5, velocity=90)
    seq.total_time = max(e for _, _, e in notes) * 0.5
    quantized = sequences_lib.quantize_note_sequence(seq, STEPS_PER_QUARTER)
    out, moved, off_grid = [], [], 0
    for (pitch, start, end), q in zip(notes, quantized.notes):
        deviation = start * STEPS_PER_QUARTER - q.quantized_start_step
        if abs(deviation) > ONSET_TOLERANCE_STEPS:
            off_grid += 1
            out.append((pitch, start, end))
            continue
        if abs(deviation) > 1e-6:
            moved.append(abs(deviation) / STEPS_PER_QUARTER)
        out.append((pitch, q.quantized_start_step / STEPS_PER_QUARTER, q.quantized_end_step / STEPS_PER_QUARTER))
    return out, moved, off_grid


def top_line(notes: Sequence[Tuple[int, float, float]]) -> List[Tuple[int, float, float]]:
    """Keep the highest of notes struck together (double stops); ``notes`` sorted by (start, -pitch)."""
    out: List[Tuple[int, float, float]] = []
    for note in sorted(notes, key=lambda n: (n[1], -n[0])):
        if out and abs(out[-1][1] - note[1]) < 1e-9:
            continue
        out.append(note)
    return out


# ----------------------------------------------------------------------------- bar phase


def _onset_features(steps: np.ndarray, last_end_step: int) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct onset steps and their inter-onset-interval buckets (the last one runs to ``last_end_step``)."""
    steps = np.unique(steps)
    ioi = np.diff(np.append(steps, max(int(last_end_step), int(steps[-1]) + 1)))
    return steps, np.searchsorted(np.array(IOI_BUCKETS), ioi, side="right") - 1


def downbeat_scores(melody_steps: np.ndarray, melody_end_step: int,
                    accompaniment_steps: Optional[np.ndarray] = None, accompaniment_end_step: int = 0) -> np.ndarray:
    """Log score of each candidate first downbeat (step 0..47 of the bar grid counted from time 0).

    Metre-model weights of the melody onsets, plus ACCOMPANIMENT_WEIGHT times
    those of the accompaniment onsets, plus PRIOR_WEIGHT times the log prior
    of the pickup length the candidate implies.
    """
    candidates = np.arange(_BAR_STEPS)
    steps, buckets = _onset_features(melody_steps, melody_end_step)
    pickup = (candidates - steps[0]) % _BAR_STEPS
    prior = np.array([PICKUP_LOG_PRIOR.get(int(p), PICKUP_LOG_PRIOR_OTHER) for p in pickup])
    scores = METRE_LOG_RATE[_LEVELS[(steps[None, :] - candidates[:, None]) % _BAR_STEPS], buckets[None, :]].sum(1)
    scores = scores + PRIOR_WEIGHT * prior
    if accompaniment_steps is not None and len(accompaniment_steps):
        steps, buckets = _onset_features(accompaniment_steps, accompaniment_end_step)
        rates = METRE_LOG_RATE[_LEVELS[(steps[None, :] - candidates[:, None]) % _BAR_STEPS], buckets[None, :]]
        scores = scores + ACCOMPANIMENT_WEIGHT * rates.sum(1)
    return scores


def _on_grid_steps(notes: Sequence[Tuple[int, float, float]]) -> Tuple[np.ndarray, int]:
    starts = np.array([s for _, s, _ in notes]) * STEPS_PER_QUARTER
    on_grid = np.abs(starts - np.round(starts)) < 1e-6
    end = max(e for _, _, e in notes) * STEPS_PER_QUARTER
    return np.round(starts[on_grid]).astype(np.int64), int(round(end))


def bar_phase(melody: Sequence[Tuple[int, float, float]], accompaniment: Sequence[Tuple[int, float, float]],
              first_meter: Tuple[int, int]) -> Tuple[float, float, str]:
    """``(delay_beats, pickup_beats, source)``: how far to delay the tune so its first downbeat is on a barline.

    A file that starts with silence placed its pickup itself and keeps its
    barlines (``file``; on the clean Nottingham MIDI, overriding them with the
    detector lowers the agreement with the ABC).  A file whose first note
    sits at time 0 is searched: ``detected`` when the tune is moved, ``file``
    when the detector keeps bar 1 at time 0, ``not_4_4`` when the first meter is not 4/4 or 2/2
    (those bars are dropped later anyway, so the file's barlines are kept).
    """
    first = min(s for _, s, _ in melody)
    bar = first_meter[0] * 4.0 / first_meter[1]
    file_pickup = round((-first) % bar, 6) % bar
    if tuple(first_meter) not in CODEC.METERS:
        return 0.0, file_pickup, "not_4_4"
    steps, end = _on_grid_steps(melody)
    if len(steps) == 0 or steps[0] > 0:
        return 0.0, file_pickup, "file"
    acc_steps, acc_end = _on_grid_steps(accompaniment) if accompaniment else (None, 0)
    scores = downbeat_scores(steps, end, acc_steps, acc_end)
    downbeat = int(np.argmax(scores))
    if downbeat == 0 or scores[downbeat] - scores[0] <= MOVE_MARGIN:
        return 0.0, file_pickup, "file"
    pickup = ((downbeat - steps[0]) % _BAR_STEPS) / STEPS_PER_QUARTER
    return ((-downbeat) % _BAR_STEPS) / STEPS_PER_QUARTER, pickup, "detected"


# ----------------------------------------------------------------------------- the reader


def midi_to_sequence(data: bytes, origin: str = "", index: int = 0, *, melody_track: Optional[str] = None,
                     melody_program: Optional[int] = None) -> music_pb2.NoteSequence:
    """MIDI bytes -> the melody as a NoteSequence on the qpm-120 beat time base; raises SkipTune.

    See the module docstring; :func:`read_report` returns what was decided.
    """
    from note_seq import midi_io

    try:
        source = midi_io.midi_to_note_sequence(data)
    except Exception as err:  # noqa: BLE001 - note_seq raises several types for corrupt files
        raise SkipTune("bad_midi", f"{type(err).__name__}: {err}") from None
    beats = _TempoMap(source.tempos)
    parts = _parts(source, beats)
    if not parts:
        raise SkipTune("no_notes", "no note in the MIDI file")
    melody, dropped = select_melody(parts, melody_track, melody_program)
    notes, moved, off_grid = quantize_onsets(melody.notes)
    notes = top_line(notes)
    accompaniment = [n for p in parts if p is not melody and not p.is_drum for n in p.notes]
    if accompaniment:
        accompaniment = quantize_onsets(accompaniment)[0]
    signatures = [(beats(ts.time), ts.numerator, ts.denominator)
                  for ts in sorted(source.time_signatures, key=lambda t: t.time)]
    first_meter = (signatures[0][1], signatures[0][2]) if signatures and signatures[0][0] < 1e-6 else (4, 4)
    delay, pickup, phase_source = bar_phase(notes, accompaniment, first_meter)
    if delay:
        notes = [(p, s + delay, e + delay) for p, s, e in notes]
        signatures = [(t + delay if t > 1e-6 else 0.0, num, den) for t, num, den in signatures]
    notes.sort(key=lambda n: (n[1], -n[0]))
    title = source.sequence_metadata.title or os.path.splitext(os.path.basename(origin))[0]
    seq = abc_reader.build_sequence(
        notes, signatures, beats(source.total_time) + delay, origin=origin, index=index, title=title,
        encoding=music_pb2.NoteSequence.SourceInfo.MIDI,
    )
    report = {
        "melody_part": melody.describe(), "top_line": melody.overlap > MAX_OVERLAP_FRACTION, "parts": len(parts), "parts_dropped": dropped,
        "onsets": len(notes), "onsets_moved": len(moved), "max_move_beats": round(max(moved, default=0.0), 6),
        "sum_move_beats": round(sum(moved), 6), "onsets_off_grid": off_grid,
        "pickup_beats": round(pickup, 6), "delay_beats": round(delay, 6), "phase_source": phase_source,
    }
    seq.text_annotations.add(time=0.0, text=REPORT_PREFIX + json.dumps(report, sort_keys=True))
    return seq


def read_report(sequence: music_pb2.NoteSequence) -> Optional[dict]:
    """The reader's decisions stored in a NoteSequence by :func:`midi_to_sequence` (None for other readers)."""
    for annotation in sequence.text_annotations:
        if annotation.text.startswith(REPORT_PREFIX):
            return json.loads(annotation.text[len(REPORT_PREFIX):])
    return None


def summarize(reports: Sequence[Tuple[str, dict]]) -> dict:
    """``summary.json``'s ``midi`` section from ``(tune_id, report)`` pairs: onset moves, phases, dropped parts."""
    onsets = sum(r["onsets"] for _, r in reports)
    moved = sum(r["onsets_moved"] for _, r in reports)
    dropped: collections.Counter = collections.Counter()
    phases: collections.Counter = collections.Counter()
    for _, r in reports:
        dropped.update(r["parts_dropped"])
        phases[f"{r['phase_source']} pickup={r['pickup_beats']:g}"] += 1
    return {
        "tunes": len(reports),
        "onsets": onsets,
        "onsets_moved": moved,
        "onsets_off_grid": sum(r["onsets_off_grid"] for _, r in reports),
        "mean_move_beats": round(sum(r["sum_move_beats"] for _, r in reports) / max(moved, 1), 6),
        "max_move_beats": max((r["max_move_beats"] for _, r in reports), default=0.0),
        "tunes_with_parts_dropped": sum(1 for _, r in reports if r["parts_dropped"]),
        "parts_dropped": dict(sorted(dropped.items())),
        "phases": dict(sorted(phases.items())),
        "phase_by_tune": {tune_id: f"{r['phase_source']} pickup={r['pickup_beats']:g}" for tune_id, r in reports},
    }
