"""Compare the ABC reader with music21 on every tune of a corpus; print the agreement rate.

    python bench/bench_music21_agreement.py [CORPUS_DIR] [--sample N] [--show N]

The comparison itself (normalisation, note lists, tolerance, the kinds of
music21 misreading set aside) lives in tests/data/test_music21_reference.py,
which checks a sample of it; this script runs it on the whole corpus or an
evenly spread ``--sample`` (~0.1-0.4 s per tune for music21).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _load_reference_module():
    path = REPO / "tests" / "data" / "test_music21_reference.py"
    spec = importlib.util.spec_from_file_location("music21_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(REPO.parent / "shared" / "data" / "nottingham"))
    parser.add_argument("--show", type=int, default=20, help="how many disagreeing tunes to list")
    parser.add_argument("--sample", type=int, default=0, help="compare an evenly spread sample of this many tunes")
    args = parser.parse_args()
    ref = _load_reference_module()
    tunes = ref.corpus_tunes(pathlib.Path(args.corpus))
    if not tunes:
        sys.exit(f"no ABC tunes under {args.corpus}")
    if args.sample:
        tunes = ref.deterministic_sample(tunes, args.sample)
    start = time.perf_counter()
    outcome = collections.Counter()
    disagree = []
    for name, index, tune in tunes:
        res = ref.compare_tune(tune) or "rejected by a reader"
        outcome[res] += 1
        if res == "disagree":
            disagree.append(f"{name}#{index}")
    elapsed = time.perf_counter() - start
    both = len(tunes) - outcome["rejected by a reader"]
    misread = {kind: outcome[kind] for kind, _ in ref.MUSIC21_MISREADINGS}
    print(f"tunes: {len(tunes)}  accepted by both: {both}  agree: {outcome['agree']}  "
          f"music21 wrong: {sum(misread.values())}  disagree: {outcome['disagree']}  "
          f"rejected by a reader: {outcome['rejected by a reader']}")
    print("music21 misreadings: " + "  ".join(f"{k}={n}" for k, n in misread.items()))
    print(f"raw agreement: {outcome['agree'] / max(both, 1):.4f}   agreement with music21's misreadings "
          f"set aside: {1 - outcome['disagree'] / max(both, 1):.4f}   ({elapsed:.1f} s)")
    for item in disagree[: args.show]:
        print("  disagree:", item)


if __name__ == "__main__":
    main()
