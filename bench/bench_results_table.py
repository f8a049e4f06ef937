"""Reproduce the results table end to end (not part of CI: hours of CPU at the default sizes).

    python bench/bench_results_table.py [--out_dir=runs/results] [--configs=base,rhy,pr,rhy_pr,all4]
        [--epochs=N] [--steps_per_epoch=N] [--source=NOTTINGHAM_DIR]

Runs, through the ``music-attr-vae`` command line so the printed commands are
exactly the ones that made the table:

1. ``prepare`` the Nottingham tune books once into OUT/data;
2. ``train`` every config (the small default model of configs/common.py) into
   OUT/<config>; an existing workdir resumes, a finished one is left as is;
3. ``evaluate`` every workdir (metrics.json + figures in OUT/<config>/eval);
4. ``compare`` them into OUT/results.md with the Figure 1 / 2 grids beside it.

Every command, its wall time and the evaluation time of each model are
written to OUT/commands.md.  ``--epochs`` / ``--steps_per_epoch`` override the
configs for a smoke run (e.g. ``--epochs=1 --steps_per_epoch=5``); the
distance-target variants are ``--configs=...,rhy_pr_distance,all4_distance``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from typing import List

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SOURCE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "nottingham")
DEFAULT_CONFIGS = "base,rhy,pr,rhy_pr,all4"


def run(cmd: List[str], log: List[str]) -> float:
    """Run one CLI command from the repository root; stop the bench on failure."""
    printable = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {printable}", flush=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}) after {wall:.0f} s: {printable}")
    log.append(f"| `{printable}` | {wall:.1f} |")
    print(f"  ({wall:.1f} s)", flush=True)
    return wall


def cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "music_attr_vae", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", default=os.path.join(REPO_ROOT, "runs", "results"))
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the Nottingham *.abc folder")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated config names")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs (smoke runs)")
    parser.add_argument("--steps_per_epoch", type=int, default=None, help="override train.steps_per_epoch")
    parser.add_argument("--max_minutes", type=float, default=None, help="override train.max_minutes per model")
    args = parser.parse_args()

    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in configs:
        if not os.path.exists(os.path.join(REPO_ROOT, "configs", f"{name}.py")):
            raise SystemExit(f"--configs: no configs/{name}.py")
    log = ["| command | wall s |", "|---|---|"]
    data_dir = os.path.join(out, "data")

    run(cli("prepare", f"--source={args.source}", f"--output_dir={data_dir}", "--noprogress"), log)
    overrides = []
    if args.epochs is not None:
        overrides.append(f"--config.train.epochs={args.epochs}")
    if args.steps_per_epoch is not None:
        overrides.append(f"--config.train.steps_per_epoch={args.steps_per_epoch}")
    if args.max_minutes is not None:
        overrides.append(f"--config.train.max_minutes={args.max_minutes}")
    workdirs = []
    for name in configs:
        workdir = os.path.join(out, name)
        run(cli("train", f"--config=configs/{name}.py", f"--workdir={workdir}", f"--source={data_dir}",
                "--noprogress", *overrides), log)
        workdirs.append(workdir)
    eval_seconds = {}
    for workdir in workdirs:
        eval_seconds[os.path.basename(workdir)] = run(cli("evaluate", f"--workdir={workdir}"), log)
    results = os.path.join(out, "results.md")
    run(cli("compare", *workdirs, f"--output={results}"), log)

    timing = ["", "| model | evaluate wall s (CLI) | inside evaluate s | n_test |", "|---|---|---|---|"]
    for workdir in workdirs:
        with open(os.path.join(workdir, "eval", "metrics.json"), encoding="utf-8") as handle:
            metrics = json.load(handle)
        name = os.path.basename(workdir)
        timing.append(f"| {name} | {eval_seconds[name]:.1f} | {metrics['timing_s']['total']:.1f} | "
                      f"{metrics['data']['n_test']} |")
    commands = os.path.join(out, "commands.md")
    with open(commands + ".tmp", "w", encoding="utf-8") as handle:
        handle.write("\n".join(log + timing) + "\n")
    os.replace(commands + ".tmp", commands)
    print(f"\nresults: {results}\ncommands and timings: {os.path.join(out, 'commands.md')}")


if __name__ == "__main__":
    main()
