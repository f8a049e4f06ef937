"""The persistent XLA compilation cache the CLI turns on (music_attr_vae/compile_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from music_attr_vae import compile_cache

JIT_PROGRAM = """
from music_attr_vae import compile_cache
print(compile_cache.enable())
import tensorflow as tf
f = tf.function(lambda x: tf.tanh(x @ tf.transpose(x)) * 3.0, jit_compile=True)
print(float(tf.reduce_sum(f(tf.ones([8, 8])))))
"""


def test_enable_sets_the_flag_and_respects_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "xla"))
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    assert compile_cache.enable() == str(tmp_path / "xla")
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 {compile_cache.FLAG}={tmp_path / 'xla'}"
    assert (tmp_path / "xla").is_dir()
    assert compile_cache.enable() == str(tmp_path / "xla")  # a second call adds nothing
    assert os.environ["TF_XLA_FLAGS"].count(compile_cache.FLAG) == 1
    # a cache the user already named wins
    monkeypatch.setenv("TF_XLA_FLAGS", f"{compile_cache.FLAG}=/elsewhere")
    assert compile_cache.enable() == "/elsewhere"
    # off, and a directory that cannot be made: no flag, TensorFlow compiles as before
    for value in ("off", str(tmp_path / "a_file" / "xla")):
        (tmp_path / "a_file").write_text("not a folder")
        monkeypatch.setenv(compile_cache.ENV, value)
        monkeypatch.setenv("TF_XLA_FLAGS", "")
        assert compile_cache.enable() is None
        assert compile_cache.FLAG not in os.environ["TF_XLA_FLAGS"]


def test_a_second_process_reuses_the_compiled_program(tmp_path):
    env = dict(os.environ, **{compile_cache.ENV: str(tmp_path / "xla"), "TF_XLA_FLAGS": ""})
    outputs, stats = [], []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", JIT_PROGRAM], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append(run.stdout.split())
        entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
        assert len(entries) == 1 and entries[0].startswith("xla_compile_cache__"), entries
        stat = (tmp_path / "xla" / entries[0]).stat()
        stats.append((stat.st_ino, stat.st_mtime_ns))
    assert stats[0] == stats[1]  # the second process loaded the entry: it neither recompiled nor rewrote it
    assert outputs[0] == outputs[1]  # the loaded program computes what the compiled one did
    assert outputs[0][0] == str(tmp_path / "xla") and abs(float(outputs[0][1]) - 64 * 3.0) < 1e-3
