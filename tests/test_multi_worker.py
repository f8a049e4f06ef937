"""`--strategy=multi_worker`: two worker processes on 127.0.0.1 train `quick` together."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from music_attr_vae import workdir as wd

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_ports(n: int):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_quick_and_the_chief_exports(tmp_path, prepared_small):
    workdir = tmp_path / "run"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=str(REPO_ROOT),
            TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        )
        cmd = [sys.executable, "-m", "music_attr_vae", "train", f"--config={REPO_ROOT / 'configs' / 'quick.py'}",
               f"--workdir={workdir}", f"--source={prepared_small}", "--strategy=multi_worker", "--progress=false"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=400)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
        assert "completed: step 24" in out
    config = json.loads((workdir / "config.json").read_text())
    assert config["run"]["strategy"] == "multi_worker" and config["run"]["replicas"] == 2
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-24")
    assert (workdir / "saved_model" / "saved_model.pb").exists()
    assert not list(workdir.glob(".worker-*"))  # the other worker's scratch checkpoints are gone
    events = [e["event"] for e in wd.read_history(str(workdir))]
    assert events == ["start", "epoch", "epoch", "export"]  # written by the chief only
