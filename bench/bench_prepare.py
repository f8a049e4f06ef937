"""Benchmark of ``prepare`` on a whole corpus (default: the Nottingham tune books).

Prints wall time, tunes/s, examples/s and peak RSS (the parent and the largest
worker), for the library call and for the ``music-attr-vae prepare`` command
end to end (interpreter start and imports included).  ``--compare_writers``
also times the two ways of writing TFRecords: this package's NumPy CRC32C
framing versus importing TensorFlow and using ``tf.io.TFRecordWriter``.

    python bench/bench_prepare.py [--source=DIR] [--max_shift=12] [--jobs=N] [--compare_writers]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
DEFAULT_SOURCE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "nottingham")


def _peak_rss_mib(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_library(source: str, max_shift: int, jobs) -> dict:
    from music_attr_vae.data import prepare

    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        summary = prepare.prepare(source, os.path.join(tmp, "out"), max_shift=max_shift, jobs=jobs, progress=False)
        wall = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu0
        size = sum(os.path.getsize(os.path.join(tmp, "out", f)) for f in os.listdir(os.path.join(tmp, "out")))
    totals = summary["totals"]
    # CPU seconds (this process + its reaped workers) vary far less than wall time on a shared machine.
    print(f"library prepare(max_shift={max_shift}, jobs={jobs}): {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"  {totals['raw_tunes']} raw tunes -> {totals['kept_tunes']} kept, {totals['measures']} measures, "
          f"{totals['examples']} examples, {size / 2**20:.1f} MiB written")
    print(f"  {totals['raw_tunes'] / wall:.0f} tunes/s, {totals['examples'] / wall:.0f} examples/s")
    # Workers are forked children of this process (no TF is loaded here), reaped by the pool.
    print(f"  peak RSS: parent {_peak_rss_mib(resource.RUSAGE_SELF):.0f} MiB, "
          f"largest worker {_peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB")
    print(prepare.format_counts(summary))
    return summary


def bench_cli(source: str, max_shift: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = _cpu_seconds()
        cmd = [sys.executable, "-m", "music_attr_vae", "prepare", f"--source={source}",
               f"--output_dir={os.path.join(tmp, 'out')}", f"--max_shift={max_shift}", "--noprogress"]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"CLI failed:\n{done.stderr}")
    print(f"CLI `music-attr-vae prepare --max_shift={max_shift}` end to end: {wall:.2f} s wall, "
          f"{_cpu_seconds() - cpu0:.2f} s CPU "
          f"(peak RSS of the children so far {_peak_rss_mib(resource.RUSAGE_CHILDREN):.0f} MiB)")


def compare_writers(source: str, max_shift: int) -> None:
    """Own framing vs TFRecordWriter on the same serialized examples."""
    from music_attr_vae.data import pipeline, sources, splits, writer

    raw = sources.read_raw_tunes(sources.resolve_source(source))
    results = pipeline.run_pipeline(raw, splits.tune_ids(raw), max_shift, serialize=False, progress=False)
    payloads = [p for r in results if r.kept for p in writer.serialize_measures(
        r.tune_id, r.measures.tokens, r.measures.attributes, r.measures.measure_index, r.shifts[0], len(r.shifts))]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with open(os.path.join(tmp, "own.tfrecord"), "wb") as f:
            f.write(b"".join(writer.frame_records(payloads)))
        own = time.perf_counter() - start
        code = (
            "import sys, time, pickle; t = time.perf_counter(); import tensorflow as tf; t1 = time.perf_counter();"
            "payloads = pickle.load(open(sys.argv[1], 'rb'));"
            "w = tf.io.TFRecordWriter(sys.argv[2]); t2 = time.perf_counter();"
            "[w.write(p) for p in payloads]; w.close(); t3 = time.perf_counter();"
            "print(f'{t1 - t:.3f} {t3 - t2:.3f}')"
        )
        import pickle

        pickled = os.path.join(tmp, "payloads.pkl")
        with open(pickled, "wb") as f:
            pickle.dump(payloads, f)
        done = subprocess.run([sys.executable, "-c", code, pickled, os.path.join(tmp, "tf.tfrecord")],
                              capture_output=True, text=True, check=True)
        tf_import, tf_write = map(float, done.stdout.split()[-2:])
        same = open(os.path.join(tmp, "own.tfrecord"), "rb").read() == open(os.path.join(tmp, "tf.tfrecord"), "rb").read()
    print(f"writing {len(payloads)} records: own NumPy CRC32C framing {own:.2f} s; "
          f"TensorFlow import {tf_import:.2f} s + TFRecordWriter {tf_write:.2f} s; identical bytes: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--max_shift", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--compare_writers", action="store_true")
    parser.add_argument("--no_cli", action="store_true", help="skip the end-to-end CLI run")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; source: {args.source}")
    bench_library(args.source, args.max_shift, args.jobs)
    if not args.no_cli:
        bench_cli(args.source, args.max_shift)
    if args.compare_writers:
        compare_writers(args.source, args.max_shift)


if __name__ == "__main__":
    main()
