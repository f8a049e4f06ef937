"""Parse whole ABC collections with the reader; print tunes per skip reason and the time.

    python bench/bench_abc_collections.py [DIR ...] [--examples N]

Default: the Nottingham corpus and the three extra collections under
``../shared/data`` (``oneills1850``, ``airds_airs``, ``essen``).  For each
collection it prints the number of tunes, how many became a NoteSequence, the
skips by reason, the share rejected for a reason other than the meter
(``unsupported_meter``) and the parse time (one core, reading the files
excluded).  ``--examples N`` lists up to N skipped tunes per reason with the
reader's detail.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from music_attr_vae.data import abc_reader, sources  # noqa: E402

DATA = REPO.parent / "shared" / "data"
DEFAULT_COLLECTIONS = ("nottingham", "oneills1850", "airds_airs", "essen")
METER_REASON = "unsupported_meter"


def collection_tunes(directory: pathlib.Path):
    """(file name, index, tune text) of every tune of every ABC file in directory (the reader's own listing)."""
    return [(os.path.basename(t.origin), t.index, t.payload)
            for t in sources.read_raw_tunes(sources.resolve_source(str(directory))) if t.kind == "abc"]


def parse_collection(tunes):
    """(Counter of outcomes, {reason: [examples]}, seconds) for a list of tunes."""
    counts = collections.Counter()
    examples = collections.defaultdict(list)
    start = time.perf_counter()
    for name, i, tune in tunes:
        try:
            abc_reader.abc_tune_to_sequence(tune, origin=name, index=i)
        except abc_reader.SkipTune as skip:
            counts[skip.reason] += 1
            examples[skip.reason].append(f"{name}#{i}: {skip.detail}")
        else:
            counts["ok"] += 1
    return counts, examples, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", help="collection directories (default: the four shared ones)")
    parser.add_argument("--examples", type=int, default=0, help="skipped tunes listed per reason")
    args = parser.parse_args()
    dirs = [pathlib.Path(d) for d in args.dirs] or [DATA / name for name in DEFAULT_COLLECTIONS]
    for directory in dirs:
        tunes = collection_tunes(directory)
        if not tunes:
            print(f"{directory}: no ABC tunes")
            continue
        counts, examples, seconds = parse_collection(tunes)
        total = len(tunes)
        other = total - counts["ok"] - counts[METER_REASON]
        reasons = "  ".join(f"{r}={n}" for r, n in counts.most_common() if r != "ok")
        print(f"{directory.name}: {total} tunes, {counts['ok']} parsed, "
              f"rejected (not meter) {other} = {other / total:.2%}, {seconds:.2f} s "
              f"({1000 * seconds / total:.2f} ms/tune)")
        print(f"  skips: {reasons or 'none'}")
        for reason, items in sorted(examples.items()):
            for item in items[: args.examples]:
                print(f"    {reason}: {item}")


if __name__ == "__main__":
    main()
