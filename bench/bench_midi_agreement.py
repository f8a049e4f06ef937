"""Agreement of the MIDI reader with the ABC reader, and with itself on real-looking files.

    python bench/bench_midi_agreement.py [--data DIR] [--jobs N] [--max_shift 12] [--show 10]
    python bench/bench_midi_agreement.py --fit-meter    # refit the metre model of midi_reader

(a) ABC (``nottingham/``) vs clean MIDI (``nottingham_midi/melody``), (b) clean
MIDI vs the same files rewritten the way real files look (480 ticks per
quarter, +-3-tick jitter, pickup at time 0, chords as a second track; see
tests/data/midi_agreement.py).  For each: kept tunes, Jaccard index of the
distinct measures (all transpositions and splits together), and every paired
tune that differs, by kind.  Also the time of reading each MIDI corpus.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "data"))

import midi_agreement as ma  # noqa: E402


def _report(title: str, a, b, show: int) -> None:
    result = ma.compare(a, b)
    print(f"\n== {title}")
    print(f"kept tunes: {result['tunes_a']} vs {result['tunes_b']} (ratio {result['tune_ratio']:.4f}); "
          f"distinct measures {result['distinct_a']} vs {result['distinct_b']}; Jaccard {result['jaccard']:.4f}")
    print(f"measures dropped: {result['dropped_a']} vs {result['dropped_b']}")
    diff = ma.diverging(a, b)
    measures_by_kind = collections.Counter()
    for kind, count in diff.values():
        measures_by_kind[kind] += count
    print(f"paired tunes: {result['paired']}")
    for kind, tunes in result["kinds"].items():
        extra = f", {measures_by_kind[kind]} distinct measures on one side only" if kind != ma.AGREE else ""
        print(f"  {tunes:4d}  {kind}{extra}")
    for name, (kind, count) in list(diff.items())[:show]:
        print(f"    {name}: {kind} ({count})")
    print(f"tunes kept by one side only: {sorted(a.kept ^ b.kept)}")


METRE_COLLECTIONS = ("oneills1850", "airds_airs", "essen")


def _fit_meter(data: pathlib.Path, collections=METRE_COLLECTIONS) -> None:
    """Print METRE_LOG_RATE and PICKUP_LOG_PRIOR fitted on the 4/4 tunes of ``collections`` (not Nottingham)."""
    from music_attr_vae.data import abc_reader, midi_reader, sources

    bar = 4 * midi_reader.STEPS_PER_QUARTER
    counts = np.ones((7, len(midi_reader.IOI_BUCKETS)))
    per_level = np.bincount([midi_reader.metrical_level(s) for s in range(bar)], minlength=7)[:, None]
    pickups = np.ones(bar)
    raws = [raw for name in collections for raw in sources.read_raw_tunes(sources.resolve_source(str(data / name)))]
    for raw in raws:
        try:
            seq = sources.raw_tune_to_sequence(raw)
        except abc_reader.SkipTune:
            continue
        if [(t.numerator, t.denominator) for t in seq.time_signatures] not in ([(4, 4)], [(2, 2)]):
            continue
        starts = np.array(sorted(n.start_time for n in seq.notes)) * 2 * midi_reader.STEPS_PER_QUARTER
        if np.any(np.abs(starts - np.round(starts)) > 1e-6):
            continue
        end = max(n.end_time for n in seq.notes) * 2 * midi_reader.STEPS_PER_QUARTER
        steps, buckets = midi_reader._onset_features(np.round(starts).astype(int), int(round(end)))
        np.add.at(counts, ([midi_reader.metrical_level(s) for s in steps], buckets), 1)
        pickups[(-steps[0]) % bar] += 1
    rates = counts / per_level
    print("METRE_LOG_RATE =", np.round(np.log(rates / rates.sum()), 2).tolist())
    prior = np.log(pickups / pickups.sum())
    print("PICKUP_LOG_PRIOR =", {s: round(float(v), 2) for s, v in enumerate(prior) if v > prior.min() + 1e-9},
          "other:", round(float(prior.min()), 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--max_shift", type=int, default=12)
    parser.add_argument("--show", type=int, default=10, help="differing tunes listed per comparison")
    parser.add_argument("--fit-meter", action="store_true")
    args = parser.parse_args()
    data = pathlib.Path(args.data)
    if args.fit_meter:
        _fit_meter(data)
        return
    melody, chords = data / "nottingham_midi" / "melody", data / "nottingham_midi" / "chords"
    abc = ma.Corpus(str(data / "nottingham"), max_shift=args.max_shift, jobs=args.jobs)
    start = time.perf_counter()
    clean = ma.Corpus(str(melody), max_shift=args.max_shift, jobs=args.jobs)
    print(f"clean MIDI read and cut into measures in {time.perf_counter() - start:.1f} s")
    _report("(a) ABC vs clean MIDI", abc, clean, args.show)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        n = ma.rewrite_corpus(melody, chords, tmp)
        print(f"\nrewrote {n} files the way real files look in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        real = ma.Corpus(tmp, max_shift=args.max_shift, jobs=args.jobs)
        print(f"real-looking MIDI read and cut into measures in {time.perf_counter() - start:.1f} s")
        phases = collections.Counter(r.reader_report["phase_source"] + f" pickup={r.reader_report['pickup_beats']:g}"
                                     for r in real.results.values() if r.reader_report)
        print("phases:", dict(phases.most_common()))
        _report("(b) clean MIDI vs real-looking MIDI", clean, real, args.show)
        _report("(c) ABC vs real-looking MIDI", abc, real, 0)


if __name__ == "__main__":
    main()
