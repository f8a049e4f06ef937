"""Test helpers for MIDI: rewrite clean rendered files "the way real files look", and compare corpora.

:func:`rewrite_like_real_midi` turns one melody file of ``nottingham_midi`` (type 0,
1,024 ticks per quarter, pickup right-aligned after leading silence) into what
real collections hold: type 1, 480 ticks per quarter, every onset and release
jittered by up to +-3 ticks, leading silence removed (the pickup starts at time
0), and the chords file of the same tune added as a second track on another
channel.

:func:`corpus_measures` runs the prepare pipeline in memory (no shards) and
returns each tune's distinct measures over all its transpositions;
:func:`jaccard` and :func:`compare` turn two corpora into the agreement figures
that ``bench/bench_midi_agreement.py`` prints and ``test_midi_reader.py`` checks.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import re
import zlib
from typing import Dict, Optional, Set, Tuple

import numpy as np

JITTER_TICKS = 3
REAL_TICKS_PER_QUARTER = 480
_X_FIELD = re.compile(r"^X:\s*(\d+)", re.M)


# ----------------------------------------------------------------------------- the rewrite


def _beats(pm, seconds: float) -> float:
    return pm.time_to_tick(seconds) / pm.resolution


def rewrite_like_real_midi(melody_path, chords_path, out_path, seed: int = 0) -> None:
    """Write ``out_path``: the melody (and chords, if ``chords_path`` exists) as a real-looking type-1 file."""
    import pretty_midi

    melody = pretty_midi.PrettyMIDI(str(melody_path))
    chords = pretty_midi.PrettyMIDI(str(chords_path)) if chords_path and os.path.exists(chords_path) else None
    rng = np.random.default_rng([seed, zlib.crc32(os.path.basename(str(melody_path)).encode())])
    start = min(_beats(melody, n.start) for inst in melody.instruments for n in inst.notes)
    seconds_per_tick = 0.5 / REAL_TICKS_PER_QUARTER  # 120 qpm
    out = pretty_midi.PrettyMIDI(resolution=REAL_TICKS_PER_QUARTER, initial_tempo=120.0)

    def tick(pm, seconds: float) -> int:
        exact = round((_beats(pm, seconds) - start) * REAL_TICKS_PER_QUARTER)
        return max(0, exact + int(rng.integers(-JITTER_TICKS, JITTER_TICKS + 1)))

    for source, name, program in ((melody, "Melody", 73), (chords, "Chords", 24)):
        if source is None:
            continue
        track = pretty_midi.Instrument(program=program, name=name)
        notes = sorted(((tick(source, n.start), tick(source, n.end), n.pitch, n.velocity)
                        for inst in source.instruments for n in inst.notes))
        next_on: Dict[int, int] = {}
        for i in range(len(notes) - 1, -1, -1):
            on, off, pitch, velocity = notes[i]
            # An exporter never releases a key after striking it again: that note-off would end the new note.
            off = min(off, next_on.get(pitch, off))
            next_on[pitch] = on
            track.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=on * seconds_per_tick,
                                                end=max(off, on + 1) * seconds_per_tick))
        out.instruments.append(track)  # pretty_midi gives each instrument its own channel (0, 1)
    for event_list, target in ((melody.time_signature_changes, out.time_signature_changes),
                               (melody.key_signature_changes, out.key_signature_changes)):
        for event in event_list:
            moved = max(0.0, _beats(melody, event.time) - start) * 0.5
            if target and abs(target[-1].time - moved) < 1e-9:
                target.pop()
            event.time = moved
            target.append(event)
    out.write(str(out_path))


def rewrite_corpus(melody_dir, chords_dir, out_dir, names=None, seed: int = 0) -> int:
    """Rewrite every melody file (or those in ``names``) of ``melody_dir``; returns how many were written."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(pathlib.Path(melody_dir).glob("*.mid")):
        if names is not None and path.stem not in names:
            continue
        rewrite_like_real_midi(path, pathlib.Path(chords_dir) / path.name, out_dir / path.name, seed=seed)
        count += 1
    return count


# ----------------------------------------------------------------------------- comparing corpora


def pair_name(raw) -> str:
    """The name that pairs a tune across corpora: ``reelsa-c1`` for MIDI file and for X: 1 of reelsa-c.abc."""
    stem = os.path.splitext(os.path.basename(raw.origin))[0]
    if raw.kind == "midi":
        return stem
    match = _X_FIELD.search(raw.payload)
    return f"{stem}{match.group(1) if match else '?' + str(raw.index)}"


class Corpus:
    """Per-tune results of the prepare pipeline, by pair name."""

    def __init__(self, source: str, max_shift: int = 12, jobs: Optional[int] = None, names=None, **midi_options):
        from music_attr_vae.data import prepare, sources

        raws = sources.read_raw_tunes(sources.resolve_source(str(source)))
        if names is not None:
            raws = [r for r in raws if pair_name(r) in names]
        options = tuple(sorted(midi_options.items()))
        if options:
            raws = [dataclasses.replace(r, options=options) if r.kind == "midi" else r for r in raws]
        ids = prepare.tune_ids(raws)
        results = prepare.run_pipeline(raws, ids, max_shift, jobs=jobs, serialize=False, progress=False)
        self.raws = {pair_name(r): r for r in raws}
        self.results = {pair_name(r): res for r, res in zip(raws, results)}
        self.measures: Dict[str, Set[bytes]] = {}
        self.originals: Dict[str, list] = {}
        for name, res in self.results.items():
            if res.kept:
                tokens = res.examples.tokens.astype(np.uint8)
                self.measures[name] = {t.tobytes() for t in tokens}
                self.originals[name] = [t.tobytes() for t, s in zip(tokens, res.examples.transposition) if s == 0]

    @property
    def kept(self) -> Set[str]:
        return set(self.measures)

    def all_measures(self, names=None) -> Set[bytes]:
        out: Set[bytes] = set()
        for name, m in self.measures.items():
            if names is None or name in names:
                out |= m
        return out

    def dropped_measures(self) -> collections.Counter:
        total: collections.Counter = collections.Counter()
        for res in self.results.values():
            total.update(res.dropped)
        return total


def jaccard(a: Set[bytes], b: Set[bytes]) -> float:
    return len(a & b) / max(len(a | b), 1)


AGREE = "agree"
REPEATS = "same measures, played a different number of times (repeats)"
EXTRA = "one side has extra measures (repeats, endings or parts played differently)"
OFF_GRID = "one side drops off-grid measures"
PHASE = "barlines placed differently (bar phase)"
PITCHES = "same rhythms, some pitches differ (accidentals)"
TIES = "tied notes struck again"
OTHER = "notes differ"


def _grid_set(sequence) -> Set[bytes]:
    from music_attr_vae.data import measures

    return {g.tobytes() for g in measures.sequence_to_grids(sequence).grids}


def delayed(sequence, beats: float):
    """A copy of a qpm-120 NoteSequence with every note and later meter change ``beats`` later."""
    out = type(sequence)()
    out.CopyFrom(sequence)
    for note in out.notes:
        note.start_time += beats * 0.5
        note.end_time += beats * 0.5
    for ts in out.time_signatures:
        if ts.time > 0:
            ts.time += beats * 0.5
    out.total_time += beats * 0.5
    return out


def _rhythms(grids: Set[bytes]) -> Set[bytes]:
    return {np.where(np.frombuffer(g, np.int16) >= 0, 1, np.frombuffer(g, np.int16)).astype(np.int16).tobytes()
            for g in grids}


def _untied(grids: Set[bytes]) -> Set[bytes]:
    """Grids with every re-strike of the note already sounding turned into HOLD."""
    out = set()
    for g in grids:
        row = np.frombuffer(g, np.int16).copy()
        sounding = None
        for t, v in enumerate(row):
            if v >= 0 and v == sounding:
                row[t] = -2  # HOLD_MARK
            elif v != -2:
                sounding = v if v >= 0 else None
        out.add(row.tobytes())
    return out


def classify(a: Corpus, b: Corpus, name: str) -> str:
    """Why tune ``name`` differs between corpora ``a`` and ``b`` (both kept it), or ``agree``.

    The first kind that explains the difference wins: repeats, extra measures,
    off-grid drops, a bar phase (``b`` delayed by a multiple of half a beat
    matches ``a``), ties (equal once re-struck notes are held), pitches only
    (same rhythms), else other notes.
    """
    from music_attr_vae.data import sources

    ma, mb = a.originals[name], b.originals[name]
    if ma == mb:
        return AGREE
    sa, sb = set(ma), set(mb)
    if sa == sb:
        return REPEATS
    off_a, off_b = a.results[name].dropped.get("off_grid_onset", 0), b.results[name].dropped.get("off_grid_onset", 0)
    if sa <= sb or sb <= sa:
        return OFF_GRID if off_a != off_b else EXTRA
    seq_a, seq_b = sources.raw_tune_to_sequence(a.raws[name]), sources.raw_tune_to_sequence(b.raws[name])
    grids_a = _grid_set(seq_a)
    for half_beats in range(1, 8):
        grids_b = _grid_set(delayed(seq_b, half_beats / 2))
        if grids_b and (grids_b <= grids_a or grids_a <= grids_b):
            return PHASE
    grids_b = _grid_set(seq_b)
    if _untied(grids_a) == _untied(grids_b):
        return TIES
    return PITCHES if _rhythms(grids_a) == _rhythms(grids_b) else OTHER


def compare(a: Corpus, b: Corpus) -> dict:
    """Agreement figures of two corpora (see module docstring)."""
    both = a.kept & b.kept
    kinds = collections.Counter(classify(a, b, n) for n in sorted(both))
    return {
        "tunes_a": len(a.kept),
        "tunes_b": len(b.kept),
        "tune_ratio": len(b.kept) / max(len(a.kept), 1),
        "jaccard": jaccard(a.all_measures(), b.all_measures()),
        "distinct_a": len(a.all_measures()),
        "distinct_b": len(b.all_measures()),
        "paired": len(both),
        "kinds": dict(kinds.most_common()),
        "dropped_a": dict(a.dropped_measures()),
        "dropped_b": dict(b.dropped_measures()),
    }


def diverging(a: Corpus, b: Corpus) -> Dict[str, Tuple[str, int]]:
    """Tunes that differ: name -> (kind, number of distinct original measures only one side has)."""
    out = {}
    for name in sorted(a.kept & b.kept):
        kind = classify(a, b, name)
        if kind != "agree":
            out[name] = (kind, len(set(a.originals[name]) ^ set(b.originals[name])))
    return out
