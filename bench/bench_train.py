"""Training and inference throughput of the MeasureVAE (small and paper sizes).

Usage::

    python bench/bench_train.py                       # small (rhy_pr) and paper, 20 timed steps each
    python bench/bench_train.py --configs=rhy_pr --steps=40 --override=model.rnn_chains=1
    python bench/bench_train.py --data_dir=PREPARED   # real measures instead of random ones
    python bench/bench_train.py --configs=paper --profile_dir=/tmp/trace   # + a TensorBoard trace and its
                                                                           #   busy time per op type

For each config it prints: parameters, compile time (first steps), training
examples/s over ``--steps`` steps of ``train.batch_size`` after warm-up (the
full train step: forward, backward, Adam; the input pipeline is an in-memory
dataset so it is not measured), the process CPU time per step, and free-running
decoding throughput (measures/s in batches of 256, greedy).  The load average
is printed before and after: other processes on the machine slow the wall
clock, while the CPU seconds per step are less affected.

Reference (issue 3): the PyTorch original trains at ~146 ex/s (paper size) and
~865 ex/s (small) on 2 threads, and decodes ~1,200 / ~5,000 measures/s.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_overrides(items):
    """Config overrides {FIELD: value} from FIELD=VALUE strings (values read as Python literals where they parse)."""
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _measures(data_dir, n, seed=0):
    """(tokens, attributes): real training measures, or random valid ones."""
    from music_attr_vae.data import attributes
    from music_attr_vae.data.codec import CODEC

    if data_dir:
        from music_attr_vae.data import loader

        arrays = loader.load_arrays(data_dir, "train")
        pick = np.random.default_rng(seed).choice(len(arrays["tokens"]), n, replace=len(arrays["tokens"]) < n)
        return arrays["tokens"][pick], arrays["attributes"][pick]
    rng = np.random.default_rng(seed)
    tokens = rng.choice(CODEC.vocab_size, size=(n, CODEC.ticks_per_measure), p=None).astype(np.int32)
    tokens[:, 0] = rng.integers(0, CODEC.rest + 1, n)  # no HOLD on tick 0, as in the data
    return tokens, attributes.compute_all(tokens)


def profile_steps(model, ds, steps: int, logdir: str) -> str:
    """Run ``steps`` more training steps under the TensorFlow profiler; the trace goes to ``logdir``.

    Open it with ``tensorboard --logdir LOGDIR`` (Profile tab; needs the
    ``tensorboard-plugin-profile`` package) to see where a step's time goes.
    """
    import tensorflow as tf

    os.makedirs(logdir, exist_ok=True)
    tf.profiler.experimental.start(logdir)
    try:
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    finally:
        tf.profiler.experimental.stop()
    return logdir


def _timed_steps(model, ds, steps: int, steps_per_execution: int = 1):
    """(wall s, process CPU s, steps run) of about ``steps`` training steps, one train function call at a time.

    The timed steps call Keras' compiled train function directly rather than
    ``fit``: timed through ``fit``, the wall time of a run came out as a whole
    multiple of ~10.24 s far more often than chance (30 steps in 10.24 s, 20 in
    20.47 s, the same figure for different settings), while the CPU time per
    step did not follow; called directly, step times are smooth.  One untimed
    call first settles the new iterator.
    """
    iterator = iter(ds)
    train = model.train_function
    float(train(iterator)["loss"])
    per_call = max(1, steps_per_execution)
    calls = max(1, steps // per_call)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        logs = train(iterator)
    float(logs["loss"])  # wait for the last step
    return time.perf_counter() - wall, time.process_time() - cpu, calls * per_call


def op_type_summary(logdir: str, steps: int, top: int = 12) -> dict:
    """Busy time per training step by TensorFlow op type, from the trace ``profile_steps`` wrote.

    Reads the newest ``*.xplane.pb`` under ``logdir`` with the profiler's own
    converter (its "framework_op_stats" table, the TensorBoard Profile tab's
    "TensorFlow stats"): {op type: [ms per step, share of busy time, calls per
    step]}, the ``top`` largest first, idle time left out.  Ops XLA compiled
    show up as one cluster op, not by type.
    """
    import glob

    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    planes = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")), key=os.path.getmtime)
    if not planes:
        return {}
    data, ok = plugin.xspace_to_tools_data([planes[-1]], "framework_op_stats", {})
    if not ok:
        return {}
    table = json.loads(data)[0]
    columns = [c["id"] for c in table["cols"]]
    totals, calls = {}, {}
    for row in table["rows"]:
        cell = dict(zip(columns, (c.get("v") for c in row["c"])))
        if cell["type"] == "IDLE":
            continue
        totals[cell["type"]] = totals.get(cell["type"], 0.0) + cell["total_self_time"]  # microseconds
        calls[cell["type"]] = calls.get(cell["type"], 0) + cell["occurrences"]
    busy = sum(totals.values()) or 1.0
    ranked = sorted(totals, key=totals.get, reverse=True)[:top]
    return {k: [round(totals[k] / 1e3 / steps, 1), round(totals[k] / busy, 3), round(calls[k] / steps)] for k in ranked}


def bench_config(name, overrides, steps, warmup, decode_batches, data_dir, steps_per_execution=1,
                 profile_dir=None, profile_steps_count=5):
    import keras
    import tensorflow as tf

    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.model.vae import build_model, model_kwargs
    from music_attr_vae.training import build_optimizer, use_xla

    config = load_config(name, overrides)
    batch = config.train.batch_size
    keras.utils.set_random_seed(0)
    model = build_model(config)
    model.compile(
        optimizer=build_optimizer(config, 10_000), jit_compile=use_xla(config),
        steps_per_execution=steps_per_execution,
    )
    tokens, attrs = _measures(data_dir, batch * 8)
    ds = tf.data.Dataset.from_tensor_slices((tokens, attrs)).batch(batch, drop_remainder=True).cache().repeat()

    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    compile_s = time.perf_counter() - start
    wall, cpu, timed = _timed_steps(model, ds, steps, steps_per_execution)
    trace = profile_steps(model, ds, profile_steps_count, os.path.join(profile_dir, name)) if profile_dir else None

    z = tf.random.normal([256, config.model.z_dim], seed=1)
    model.decode(z, 0.0, 0)  # trace
    d_wall = time.perf_counter()
    for i in range(decode_batches):
        model.decode(z, 0.0, i).numpy()
    d_wall = time.perf_counter() - d_wall
    return {
        "config": name,
        "overrides": overrides,
        "params": int(model.count_params()),
        "batch": batch,
        "rnn_chains": model_kwargs(config)["rnn_chains"],
        "xla": use_xla(config),
        "matmul_dtype": config.model.matmul_dtype,
        "inference_matmul_dtype": config.model.inference_matmul_dtype,
        "compile_and_warmup_s": round(compile_s, 1),
        "train_examples_per_s": round(timed * batch / wall, 1),
        "cpu_s_per_step": round(cpu / timed, 3),
        "decode_measures_per_s": round(decode_batches * 256 / d_wall, 1),
        "profile_trace": trace,
        "profile_ms_share_calls_per_step": op_type_summary(trace, profile_steps_count) if trace else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="rhy_pr,paper", help="comma-separated config names")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per config")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    parser.add_argument("--decode_batches", type=int, default=10, help="timed decode batches of 256")
    parser.add_argument("--data_dir", default=None, help="prepared dataset to draw real measures from")
    parser.add_argument("--override", action="append", help="config override FIELD=VALUE (repeatable)")
    parser.add_argument("--steps_per_execution", type=int, default=1, help="Keras steps per tf.function call")
    parser.add_argument("--profile_dir", default=None,
                        help="write a TensorBoard profiler trace of --profile_steps training steps here")
    parser.add_argument("--profile_steps", type=int, default=5, help="steps traced with --profile_dir")
    args = parser.parse_args()
    overrides = parse_overrides(args.override)
    print(f"load average before: {os.getloadavg()}", flush=True)
    for name in args.configs.split(","):
        result = bench_config(
            name, overrides, args.steps, args.warmup, args.decode_batches, args.data_dir, args.steps_per_execution,
            args.profile_dir, args.profile_steps,
        )
        print(json.dumps(result), flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
