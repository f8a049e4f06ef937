"""One table of every speed figure of issue 13, each with the machine's load beside it.

Usage::

    python bench/bench_table.py --data_dir=PREPARED [--json=runs/bench_table.json]

Each measurement runs in a fresh process, as a user's command would:

* training examples/s, small (``rhy_pr``) and paper size, in the default
  precision (bf16 GRU products where the CPU has them) and in float32 with XLA
  (``bench/bench_train.py``);
* decoding measures/s at batch 256 and the median single-measure 8-step
  traverse, in the SavedModel as served, both sizes (``bench/bench_serving.py``
  on an untrained export: speed does not depend on the weights);
* examples/s the ``tf.data`` training pipeline delivers alone (to compare with
  the training rate: the input must never be the bottleneck);
* time to the first training step of ``music-attr-vae train``, both sizes:
  from the process start to the checkpoint written after step 1, with an empty
  XLA cache ("cold") and again with the cache the first run filled ("warm");
* time to the first answer of ``music-attr-vae generate`` (one 8-step
  traversal) and ``music-attr-vae edit`` (one bar of a 4-bar ABC tune), both
  sizes: the whole command, from the process start to its exit, on an
  untrained export, cold and warm.

The 1-minute load average is read before each measurement; figures taken at a
load above ~0.5 shared the 2 cores with other work.

**The original, in the same sitting.**  With ``--original_python`` (a Python
that has PyTorch) and ``--original_dir`` (a checkout of the authors' code, see
``bench/bench_original.py``, which is not part of this repository), the
PyTorch original is timed by ``bench_original.py`` right after ours at each
size (training, decode, traverse), and the table gets its figures and the
ratio beside ours.  Only ratios from one sitting mean anything: absolute
figures drift between machines by 40% or more::

    python bench/bench_table.py --data_dir=PREPARED \
        --original_python=/opt/orig-venv/bin/python --original_dir=/work/original_measurevae
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(os.path.dirname(HERE), "configs")
SIZES = {"small": "rhy_pr", "paper": "paper"}
FIGURES = ("input", "first_step", "train", "serving", "first_answer")
PRECISIONS = {"default": [], "float32": ["--override=model.matmul_dtype=float32", "--override=train.jit_compile=True"]}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return "?"


def _json_lines(text: str):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _run(cmd, env=None, timeout=3600) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def train_rate(config: str, precision: str, data_dir: str, steps: int) -> dict:
    load = _load()
    out = _run([sys.executable, os.path.join(HERE, "bench_train.py"), f"--configs={config}", f"--steps={steps}",
                "--warmup=3", "--decode_batches=1", f"--data_dir={data_dir}", *PRECISIONS[precision]])
    result = _json_lines(out)[-1]
    return {"value": result["train_examples_per_s"], "load": load, "compile_s": result["compile_and_warmup_s"]}


def serving(config: str) -> dict:
    load = _load()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "serving.json")
        _run([sys.executable, os.path.join(HERE, "bench_serving.py"), f"--config={config}", f"--json={path}"])
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    return {"decode": {"value": result["decode"]["measures_per_s"], "load": load},
            "traverse": {"value": result["traverse"]["median_ms"], "load": load}}


INPUT_PROGRAM = """
import sys, time
from music_attr_vae.data import loader
ds = loader.make_dataset(sys.argv[1], "train", 256, shuffle=True, seed=1, drop_remainder=True)
it = iter(ds)
next(it)  # the first batch builds the cache
start, n = time.perf_counter(), 0
for batch in it:
    n += int(batch[0].shape[0])
    if n >= 100_000:
        break
print(n / (time.perf_counter() - start))
"""


def input_rate(data_dir: str) -> dict:
    """Examples/s the tf.data training pipeline delivers on its own (parse, transpose, shuffle, batch)."""
    load = _load()
    out = _run([sys.executable, "-c", INPUT_PROGRAM, data_dir])
    return {"value": round(float(out.split()[-1])), "load": load}


def first_step_seconds(config: str, data_dir: str, cache: str) -> dict:
    """Seconds from launching ``music-attr-vae train`` to the checkpoint of step 1 (the process is then stopped)."""
    load = _load()
    env = dict(os.environ, MUSIC_ATTR_VAE_XLA_CACHE=cache, TF_XLA_FLAGS="")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = os.path.join(tmp, "run")
        ckpt = os.path.join(workdir, "checkpoints", "ckpt-1.index")
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["music-attr-vae", "train", f"--config={os.path.join(CONFIGS, config + '.py')}", f"--workdir={workdir}", f"--source={data_dir}",
             "--config.train.checkpoint_every_steps=1", "--noprogress"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while not os.path.exists(ckpt):
                if proc.poll() is not None:
                    raise RuntimeError(f"train ended before its first step:\n{proc.stderr.read()[-3000:]}")
                if time.perf_counter() - start > 900:
                    raise RuntimeError("no first step within 900 s")
                time.sleep(0.05)
            seconds = time.perf_counter() - start
        finally:
            proc.kill()
            proc.wait()
    return {"value": round(seconds, 1), "load": load}


TUNE = """X:1
T:Bench tune
M:4/4
L:1/8
K:G
GABc dedB|dedB dedB|c2ec B2dB|c2A2 A2BA|
"""


def first_answer_seconds(config: str, cache: str) -> dict:
    """Seconds of a whole ``generate`` and ``edit`` command on an untrained export, cold and warm XLA cache."""
    env = dict(os.environ, MUSIC_ATTR_VAE_XLA_CACHE=cache, TF_XLA_FLAGS="")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-c", EXPORT_PROGRAM, config, tmp, HERE], env=env)
        saved = os.path.join(tmp, "saved_model")
        tune = os.path.join(tmp, "tune.abc")
        with open(tune, "w", encoding="utf-8") as f:
            f.write(TUNE)
        commands = {
            "generate": ["generate", f"--saved_model={saved}", "--attribute=pitch_range", "--steps=8"],
            "edit": ["edit", f"--saved_model={saved}", f"--tune={tune}", "--measures=2", "--set=pitch_range+=0.1"],
        }
        for kind in ("cold", "warm"):
            if kind == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            for name, argv in commands.items():
                load = _load()
                start = time.perf_counter()
                _run(["music-attr-vae", *argv, f"--out={os.path.join(tmp, name + '_' + kind)}"], env=env)
                results[f"{name}/{kind}"] = {"value": round(time.perf_counter() - start, 1), "load": load}
    return results


EXPORT_PROGRAM = """
import sys
sys.path.insert(0, sys.argv[3])
from bench_serving import export_untrained
export_untrained(sys.argv[1], sys.argv[2])
"""


def original_figures(size: str, python: str, original_dir: str, steps: int) -> dict:
    """The PyTorch original's train ex/s, decode measures/s and traverse ms at ``size`` (``bench_original.py``)."""
    load = _load()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "original.jsonl")
        _run([python, os.path.join(HERE, "bench_original.py"), f"--original_dir={original_dir}", f"--sizes={size}",
              f"--steps={steps}", "--warmup=2", "--decode_repeats=4", "--traverse_repeats=20", f"--json={path}"])
        with open(path, encoding="utf-8") as f:
            result = json.loads(f.read().splitlines()[-1])
    return {"train": {"value": result["train_examples_per_s"], "load": load},
            "decode": {"value": result["decode_measures_per_s"], "load": result["load_decode"]},
            "traverse": {"value": result["traverse_median_ms"], "load": result["load_traverse"]},
            "torch": result["torch"]}


def table(results: dict) -> str:
    original = results.get("original") or {}
    columns = [(size, kind) for size in SIZES for kind in (("ours", "original", "ratio") if original else ("ours",))]
    rows = ["| figure | " + " | ".join(f"{size} ({kind})" if original else size for size, kind in columns) + " |",
            "|---" * (len(columns) + 1) + "|"]

    def cell(entry, fmt):
        return f"{fmt.format(entry['value'])} (load {entry['load']})" if entry else "—"

    def row(name, ours_by_size, key, fmt, higher_is_better=True):
        cells = []
        for size, kind in columns:
            ours = ours_by_size(size)
            theirs = original.get(size, {}).get(key)
            if kind == "ours":
                cells.append(cell(ours, fmt))
            elif kind == "original":
                cells.append(cell(theirs, fmt))
            elif ours and theirs and ours["value"] and theirs["value"]:
                ratio = ours["value"] / theirs["value"] if higher_is_better else theirs["value"] / ours["value"]
                cells.append(f"{ratio:.2f}x")
            else:
                cells.append("—")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")

    for precision in PRECISIONS:
        row(f"train ex/s, {precision}", lambda size: results["train"].get(f"{size}/{precision}"), "train", "{:,.0f}")
    row("decode measures/s, batch 256, SavedModel", lambda size: results["serving"].get(size, {}).get("decode"),
        "decode", "{:,.0f}")
    row("traverse 1 measure x 8 steps, median ms", lambda size: results["serving"].get(size, {}).get("traverse"),
        "traverse", "{:.1f}", higher_is_better=False)
    rows.append("")
    rows.append("| figure | small | paper |")
    rows.append("|---|---|---|")
    rows.append(f"| tf.data input alone, ex/s | {cell(results.get('input'), '{:,.0f}')} | (same pipeline) |")
    for kind in ("cold", "warm"):
        rows.append(f"| first training step, s ({kind} XLA cache) | " + " | ".join(
            cell(results["first_step"].get(f"{size}/{kind}"), "{:.1f}") for size in SIZES) + " |")
    for name in ("generate", "edit"):
        for kind in ("cold", "warm"):
            rows.append(f"| whole `{name}` command, s ({kind} XLA cache) | " + " | ".join(
                cell(results["first_answer"].get(size, {}).get(f"{name}/{kind}"), "{:.1f}") for size in SIZES) + " |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="a prepared dataset (music-attr-vae prepare)")
    parser.add_argument("--sizes", default="small,paper", help="comma-separated: small, paper")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per figure")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--figures", default=",".join(FIGURES), help=f"comma-separated subset of: {', '.join(FIGURES)}")
    parser.add_argument("--original_python", help="a Python with PyTorch: also time the original (bench_original.py)")
    parser.add_argument("--original_dir", help="with --original_python: a checkout of the original's code")
    parser.add_argument("--original_steps", type=int, default=6, help="timed training steps of the original")
    args = parser.parse_args()
    if bool(args.original_python) != bool(args.original_dir):
        parser.error("--original_python and --original_dir go together")
    if args.original_dir and not os.path.isfile(os.path.join(args.original_dir, "measurevae", "measure_vae.py")):
        parser.error(f"--original_dir={args.original_dir}: no measurevae/measure_vae.py there")
    figures = [f for f in args.figures.split(",") if f]
    if set(figures) - set(FIGURES):
        parser.error(f"--figures: unknown {sorted(set(figures) - set(FIGURES))}; known: {', '.join(FIGURES)}")
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        parser.error(f"--sizes: unknown {sorted(unknown)}; known: {', '.join(SIZES)}")
    results = {"machine": {"cpus": os.cpu_count(), "cpu": _cpu_model()}, "train": {}, "serving": {}, "first_step": {},
               "first_answer": {}, "original": {}}
    cache = tempfile.mkdtemp(prefix="xla-cache-")
    if "input" in figures:
        results["input"] = input_rate(args.data_dir)
    try:
        for size in sizes:
            config = SIZES[size]
            if "first_step" in figures:
                for kind in ("cold", "warm"):  # cold first: the cache starts empty
                    results["first_step"][f"{size}/{kind}"] = first_step_seconds(config, args.data_dir, cache)
            if "train" in figures:
                for precision in PRECISIONS:
                    results["train"][f"{size}/{precision}"] = train_rate(config, precision, args.data_dir, args.steps)
            if "serving" in figures:
                results["serving"][size] = serving(config)
            if args.original_python:
                results["original"][size] = original_figures(size, args.original_python, args.original_dir,
                                                             args.original_steps)
            if "first_answer" in figures:
                results["first_answer"][size] = first_answer_seconds(config, cache)
            print(json.dumps({size: {k: v for k, v in results.items() if k != "machine"}}), flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
