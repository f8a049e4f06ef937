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
FIRST_PART = "renderer stops after the first part (body P: labels)"
PART_ORDER = "renderer plays the parts of the Y: line"
ACCIDENTALS = "renderer does not carry accidentals to the end of the bar"
TIES = "renderer strikes tied notes again"
TIES_AND_ACCIDENTALS = "renderer strikes tied notes again and does not carry accidentals"
OTHER = "notes differ"
KINDS = (AGREE, REPEATS, OFF_GRID, PHASE, FIRST_PART, PART_ORDER, TIES, ACCIDENTALS, TIES_AND_ACCIDENTALS, EXTRA,
         OTHER)
_Y_FIELD = re.compile(r"^Y:", re.M)
_P_FIELD = re.compile(r"^P:", re.M)


def _grid_set(sequence) -> Set[bytes]:
    from music_attr_vae.data.codec import CODEC

    return {g.tobytes() for g in CODEC.to_grids(sequence).grids}


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


def _notes(sequence) -> list:
    """(pitch, start, end) in beats from the first onset, sorted."""
    notes = sorted((n.start_time * 2, n.end_time * 2, n.pitch) for n in sequence.notes)
    first = notes[0][0] if notes else 0.0
    return [(p, round(s - first, 4), round(e - first, 4)) for s, e, p in notes]


def _walk(abc: list, midi: list) -> Tuple[int, int, bool, bool]:
    """Match ABC notes to MIDI notes from the start, as far as they agree.

    An ABC note matches a MIDI note with the same start, a pitch at most one
    semitone off, and the same end, or a run of such notes that tiles it (a
    tie struck again; the note after the tie may lose a carried accidental).  Returns ``(abc notes matched, MIDI
    notes matched, some tie struck again, some pitch a semitone off)``.
    """
    i = j = 0
    restruck = semitone = False
    while i < len(abc) and j < len(midi):
        pitch_a, start_a, end_a = abc[i]
        pitch_b, start_b, end = midi[j]
        if abs(start_a - start_b) > 1e-3 or abs(pitch_a - pitch_b) > 1:
            break
        k = j
        while end < end_a - 1e-3 and k + 1 < len(midi) and abs(midi[k + 1][0] - pitch_a) <= 1 \
                and abs(midi[k + 1][1] - end) < 1e-3:
            k += 1
            end = midi[k][2]
            semitone |= midi[k][0] != pitch_a
        if abs(end - end_a) > 1e-3:
            break
        restruck |= k > j
        semitone |= pitch_a != pitch_b
        i, j = i + 1, k + 1
    return i, j, restruck, semitone


def renderer_kind(abc_notes: list, midi_notes: list, abc_text: str) -> Optional[str]:
    """The renderer convention that turns the ABC reader's notes into the MIDI file's, or None.

    Checked in note space (times from the first onset, :func:`_walk`): the
    MIDI file ends inside the ABC tune's notes, which has body ``P:`` labels
    (the renderer plays only the first part); every note matches with tied
    notes struck again and/or pitches a semitone off (accidentals not carried
    through the bar); else a ``Y:`` line and a different length (the renderer
    plays the parts that line lists).
    """
    i, j, restruck, semitone = _walk(abc_notes, midi_notes)
    if j >= len(midi_notes) - 1 and i < len(abc_notes) - 1 and _P_FIELD.search(abc_text):
        return FIRST_PART
    if i == len(abc_notes) and j == len(midi_notes):
        if restruck and semitone:
            return TIES_AND_ACCIDENTALS
        return TIES if restruck else (ACCIDENTALS if semitone else None)
    if _Y_FIELD.search(abc_text) and len(abc_notes) != len(midi_notes):
        return PART_ORDER
    return None


def classify(a: Corpus, b: Corpus, name: str) -> str:
    """Why tune ``name`` differs between corpora ``a`` (ABC or MIDI) and ``b`` (MIDI), or ``agree``.

    The first kind that explains the difference wins: repeats (the same
    measures), off-grid drops, a bar phase (``b`` delayed by a multiple of half
    a beat matches ``a``), a renderer convention (:func:`renderer_kind`, when
    ``a`` is ABC), extra measures on one side, else other notes.
    """
    from music_attr_vae.data import sources

    ma, mb = a.originals[name], b.originals[name]
    if ma == mb:
        return AGREE
    sa, sb = set(ma), set(mb)
    if sa == sb:
        return REPEATS
    off_a, off_b = a.results[name].dropped.get("off_grid_onset", 0), b.results[name].dropped.get("off_grid_onset", 0)
    if (sa <= sb or sb <= sa) and off_a != off_b:
        return OFF_GRID
    seq_a, seq_b = sources.raw_tune_to_sequence(a.raws[name]), sources.raw_tune_to_sequence(b.raws[name])
    grids_a = _grid_set(seq_a)
    for half_beats in range(1, 8):
        grids_b = _grid_set(delayed(seq_b, half_beats / 2))
        if grids_b and (grids_b <= grids_a or grids_a <= grids_b):
            return PHASE
    if a.raws[name].kind != "midi":
        kind = renderer_kind(_notes(seq_a), _notes(seq_b), a.raws[name].payload)
        if kind:
            return kind
    return EXTRA if sa <= sb or sb <= sa else OTHER


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
