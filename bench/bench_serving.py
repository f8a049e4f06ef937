"""Benchmark of the exported SavedModel: decode throughput, traverse latency, monotone traversals.

Everything is measured through ``tf.saved_model.load`` (what a client sees):

* **decode throughput**: ``decode`` of prior draws in batches of ``--batch``
  (greedy), measures per second (median over ``--repeats`` calls);
* **traverse latency**: ``traverse`` of one measure over ``--traverse_steps``
  values, median and 90th percentile wall time per call in ms;
* **monotone traversals** (for each regularised attribute): ``--seeds``
  starting codes (prior draws, and encoded reference measures shipped in the
  SavedModel) traversed over the fitted range in ``--monotone_steps`` steps;
  reports the share of steps where the decoded attribute rises (strictly) and
  where it does not fall.

    python bench/bench_serving.py --saved_model=runs/rhy_pr/saved_model [--seeds=500] [--json=out.json]
    python bench/bench_serving.py --config=rhy_pr     # speed only: exports an untrained model of that config

Run it on an otherwise idle machine; on a shared one the timings are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from bench_train import parse_overrides  # bench/ is on the path when this script runs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def _timed(fn, repeats: int, warmup: int = 3):
    """(wall seconds, process CPU seconds) of each call after ``warmup`` calls.

    On a busy machine the wall time is inflated by other processes; the CPU
    time (all threads of this process) divided by the cores shows what an idle
    machine would give.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return np.array(wall), np.array(cpu)


def bench_decode(model, z_dim: int, batch: int, repeats: int) -> dict:
    z = np.random.default_rng(0).standard_normal((batch, z_dim)).astype(np.float32)
    times, cpu = _timed(
        lambda: model.decode(z=z, temperature=np.float32(0), seed=np.int32(0))["tokens"].numpy(), repeats
    )
    return {
        "batch": batch,
        "median_ms": float(np.median(times) * 1e3),
        "measures_per_s": float(batch / np.median(times)),
        "cpu_ms": float(np.median(cpu) * 1e3),
        "measures_per_cpu_s": float(batch / np.median(cpu)),
    }


def bench_traverse(model, tokens: np.ndarray, attribute: str, values: np.ndarray, repeats: int) -> dict:
    one = tokens[:1]

    def call():
        return model.traverse(tokens=one, attribute=attribute, values=values, temperature=np.float32(0),
                              seed=np.int32(0))["tokens"].numpy()

    times, cpu = _timed(call, repeats, warmup=5)
    return {
        "steps": len(values),
        "median_ms": float(np.median(times) * 1e3),
        "p90_ms": float(np.percentile(times, 90) * 1e3),
        "cpu_ms": float(np.median(cpu) * 1e3),
    }


def monotone_steps(model, meta: dict, name: str, z_start: np.ndarray, steps: int, batch: int = 256) -> dict:
    """Share of traversal steps where the decoded attribute rises / does not fall."""
    fitted = meta["attribute_maps"][name]
    column = meta["attribute_names"].index(name)
    values = np.linspace(*fitted["z_range"], steps).astype(np.float32)
    curves = []
    for i in range(0, len(z_start), batch):
        out = model.traverse_z(z=z_start[i : i + batch], attribute=name, values=values,
                               temperature=np.float32(0), seed=np.int32(0))
        tokens = out["tokens"].numpy()
        measured = model.attributes(tokens=tokens.reshape(-1, 24))["values"].numpy()[:, column]
        curves.append(measured.reshape(len(tokens), steps))
    curves = np.concatenate(curves)
    diffs = np.diff(curves, axis=1)
    return {
        "traversals": int(len(curves)),
        "steps_per_traversal": steps,
        "rising_steps": float(np.mean(diffs > 0)),
        "non_falling_steps": float(np.mean(diffs >= 0)),
        "fully_monotone_traversals": float(np.mean(np.all(diffs >= 0, axis=1))),
        "mean_attribute_first_last": [float(curves[:, 0].mean()), float(curves[:, -1].mean())],
    }


def export_untrained(config_name: str, directory: str, jit_compile: bool = True, overrides=None) -> str:
    """Export an untrained model of a config (speed does not depend on the weights)."""
    from music_attr_vae.serving import export
    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.model.vae import build_model

    config = load_config(config_name, overrides)
    return export.export_saved_model(
        build_model(config), config, os.path.join(directory, "saved_model"), jit_compile=jit_compile
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved_model", help="an exported SavedModel")
    parser.add_argument("--config", help="instead: export an untrained model of this config (speed only)")
    parser.add_argument("--no_jit", action="store_true", help="with --config: export without the XLA decoder")
    parser.add_argument("--override", action="append", default=[],
                        help="with --config: config override FIELD=VALUE (repeatable), "
                             "e.g. model.inference_matmul_dtype=bfloat16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--traverse_steps", type=int, default=8)
    parser.add_argument("--traverse_repeats", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=500, help="traversals per attribute for the monotone figure")
    parser.add_argument("--monotone_steps", type=int, default=8)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if bool(args.saved_model) == bool(args.config):
        parser.error("give exactly one of --saved_model and --config")

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        overrides = parse_overrides(args.override)
        path = args.saved_model or export_untrained(args.config, tmp, not args.no_jit, overrides)
        start = time.perf_counter()
        model = tf.saved_model.load(path)
        load_s = time.perf_counter() - start
        meta = json.loads(model.metadata()["json"].numpy().decode("utf-8"))
        results = {"saved_model": args.saved_model or f"untrained {args.config}", "model_name": meta["model_name"],
                   "load_s": load_s, "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
        print(f"{results['saved_model']}: loaded in {load_s:.1f} s; {os.cpu_count()} CPUs, "
              f"load average {results['load_average'][0]:.2f}")

        results["decode"] = bench_decode(model, meta["z_dim"], args.batch, args.repeats)
        d = results["decode"]
        print(f"decode, batch {d['batch']}: {d['median_ms']:.1f} ms/batch -> {d['measures_per_s']:.0f} measures/s "
              f"(CPU {d['cpu_ms']:.1f} ms/batch over all threads -> {d['measures_per_cpu_s']:.0f} measures per CPU-s)")

        ref = model.reference_measures()["tokens"].numpy()
        names = list(meta["attribute_maps"])
        attribute = names[0] if names else "0"
        values = (np.linspace(*meta["attribute_maps"][attribute]["z_range"], args.traverse_steps) if names
                  else np.linspace(-3, 3, args.traverse_steps)).astype(np.float32)
        results["traverse"] = bench_traverse(model, ref, attribute, values, args.traverse_repeats)
        t = results["traverse"]
        print(f"traverse, 1 measure x {t['steps']} steps: median {t['median_ms']:.2f} ms, p90 {t['p90_ms']:.2f} ms "
              f"(CPU {t['cpu_ms']:.2f} ms)")

        if args.saved_model:
            results["monotone"] = {}
            z_prior = model.sample(n=args.seeds, seed=0, temperature=np.float32(0))["z"].numpy()
            z_ref = model.encode(tokens=ref[: args.seeds])["z_mean"].numpy()
            for name in names:
                for origin, z in (("prior", z_prior), ("reference", z_ref)):
                    r = monotone_steps(model, meta, name, z, args.monotone_steps)
                    results["monotone"][f"{name}/{origin}"] = r
                    print(f"{name:20s} from {origin:9s}: {r['traversals']} traversals, rising in "
                          f"{r['rising_steps']:.1%} of steps, not falling in {r['non_falling_steps']:.1%}, "
                          f"{r['fully_monotone_traversals']:.1%} fully monotone; attribute "
                          f"{r['mean_attribute_first_last'][0]:.3f} -> {r['mean_attribute_first_last'][1]:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
