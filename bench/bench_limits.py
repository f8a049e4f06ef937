"""Memory and time of the SavedModel's largest allowed request and of refused oversized ones.

Each case runs in a fresh process (so its peak resident memory is its own):
``sample`` at ``MAX_SAMPLE``, and ``sample(n=10**7)`` / ``sample(n=2**31-1)``,
which the limits refuse.  Reports wall seconds of the call and the process's
peak RSS minus its RSS after loading the model.

    python bench/bench_limits.py --saved_model=runs/rhy_pr/saved_model
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = """
import json, resource, sys, time
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
n = int(sys.argv[2])
loaded.sample(tf.constant(8, tf.int32), tf.constant(0, tf.int32), tf.constant(0.0))  # trace + warm up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    loaded.sample(tf.constant(n, tf.int32), tf.constant(0, tf.int32), tf.constant(0.0))
    outcome = "ok"
except tf.errors.InvalidArgumentError as err:
    outcome = "refused: " + [l for l in err.message.splitlines() if "MAX_" in l][0].strip()
seconds = time.perf_counter() - start
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"n": n, "seconds": round(seconds, 3), "peak_rss_growth_mb": round(grown / 1024, 1),
                  "outcome": outcome}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved_model", required=True)
    args = parser.parse_args()
    with open(f"{args.saved_model}/assets/metadata.json", encoding="utf-8") as handle:
        limit = json.load(handle)["limits"]["MAX_SAMPLE"]
    for n in (limit, 10**7, 2**31 - 1):
        out = subprocess.run([sys.executable, "-c", CASE, args.saved_model, str(n)], capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else json.dumps({"n": n, "error": out.stderr[-500:]})
        print(line, flush=True)


if __name__ == "__main__":
    main()
