"""Training runs: SIGKILL + resume + export + reload round trip, NaN stop, reproducibility, clear errors."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae import training
from music_attr_vae import workdir as wd
from music_attr_vae.configs_loader import load_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK = str(REPO_ROOT / "configs" / "quick.py")


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))


def _train_cmd(workdir, source, *extra):
    return [sys.executable, "-m", "music_attr_vae", "train", f"--config={QUICK}", f"--workdir={workdir}",
            f"--source={source}", "--progress=false", *extra]


def _checkpoint_steps(workdir) -> list:
    index = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
    return [] if index is None else [int(p.rsplit("-", 1)[1]) for p in index.all_model_checkpoint_paths]


RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    tokens = np.array([[60 - 55] + [31] * 5 + [64 - 55] + [31] * 5 + [67 - 55] + [31] * 11] * 3, np.int32)
    enc = loaded.signatures["encode"](tokens=tf.constant(tokens))
    z = enc["z_mean"]
    dec = loaded.signatures["decode"](z=z, temperature=tf.constant(0.0), seed=tf.constant(0, tf.int32))
    hot = loaded.decode(tf.constant(z), tf.constant(1.0), tf.constant(3, tf.int32))
    out = dec["tokens"].numpy()
    print(json.dumps({
        "z_shape": list(z.shape), "z_dtype": z.dtype.name, "log_var_shape": list(enc["z_log_var"].shape),
        "tokens_shape": list(out.shape), "tokens_dtype": out.dtype.name,
        "in_vocab": bool(out.min() >= 0 and out.max() < 32), "hot_shape": list(hot["tokens"].shape),
        "package_imported": any(m.startswith("music_attr_vae") for m in sys.modules),
    }))
    """
)


def test_sigkill_resume_export_reload_round_trip(tmp_path, prepared_small, quick_workdir):
    """Kill a `quick` run mid-epoch, rerun it: it resumes from the checkpoint and ends exactly like an
    uninterrupted run (same step count, same weights), then exports a SavedModel that loads without the package."""
    workdir = tmp_path / "run"
    config = load_config(QUICK)
    steps_per_epoch = config.train.steps_per_epoch
    total = steps_per_epoch * config.train.epochs
    every = config.train.checkpoint_every_steps
    assert every < steps_per_epoch  # a step checkpoint lands mid-epoch

    proc = subprocess.Popen(_train_cmd(workdir, prepared_small), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None and not _checkpoint_steps(workdir):
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # right after the first mid-epoch checkpoint
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()[-3000:]
    killed_at = max(_checkpoint_steps(workdir))
    assert 0 < killed_at < total and killed_at % steps_per_epoch != 0  # mid-epoch, work was lost after it
    assert not (workdir / "saved_model").exists()

    rerun = subprocess.run(_train_cmd(workdir, prepared_small), env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    events = wd.read_history(str(workdir))
    resume = [e for e in events if e["event"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == killed_at  # continued from the checkpoint, not from 0
    assert resume[0]["step_in_epoch"] == killed_at % steps_per_epoch
    assert [e["step"] for e in events if e["event"] == "export"] == [total]

    # Same seed, same data order and noise per step: identical to the uninterrupted run.
    resumed, _ = wd.load_model(str(workdir))
    straight, _ = wd.load_model(str(quick_workdir))
    assert max(_checkpoint_steps(quick_workdir)) == total
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script), str(workdir / "saved_model")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "z_shape": [3, config.model.z_dim], "z_dtype": "float32", "log_var_shape": [3, config.model.z_dim],
        "tokens_shape": [3, 24], "tokens_dtype": "int32", "in_vocab": True, "hot_shape": [3, 24],
        "package_imported": False,
    }


def test_quick_run_writes_the_workdir_layout(quick_workdir):
    config_json = json.loads((quick_workdir / "config.json").read_text())
    assert os.path.isdir(config_json["data_dir"]) and config_json["name"] == "quick"
    assert (quick_workdir / "saved_model" / "saved_model.pb").exists()
    for split in ("train", "validation"):
        assert list((quick_workdir / "tensorboard" / split).glob("events.out.tfevents.*"))
    tags = set()
    for path in (quick_workdir / "tensorboard").rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    assert {"loss", "recon_loss", "kl", "accuracy", "learning_rate", "beta", "examples_per_second",
            "reg_rhythmic_complexity", "reg_pitch_range", "free_accuracy", "test_latents"} <= tags
    # load_model restores every weight: two loads (each built from a fresh random init) agree
    first, config = wd.load_model(str(quick_workdir))
    second, _ = wd.load_model(str(quick_workdir))
    assert config.name == "quick" and len(first.weights) == len(second.weights) > 20
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    epochs = [e for e in wd.read_history(str(quick_workdir)) if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    # it learns: validation reconstruction improves over the two epochs
    assert epochs[1]["validation"]["recon_loss"] < epochs[0]["validation"]["recon_loss"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared_small):
    config = load_config(QUICK, {"train.inject_nan_at_step": 8})
    workdir = tmp_path / "nan"
    with pytest.raises(training.NonFiniteLossError, match=r"the loss became nan at step 8 .*ckpt-5"):
        training.train(config, str(workdir), source=str(prepared_small), progress=False)
    assert _checkpoint_steps(workdir) == [5]
    model, _ = wd.load_model(str(workdir))
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert not (workdir / "saved_model").exists()
    assert wd.read_history(str(workdir))[-1]["event"] == "non_finite_loss"


def test_clear_errors(tmp_path, prepared_small, monkeypatch):
    quick = load_config(QUICK)
    with pytest.raises(FileNotFoundError, match="parent folder .*missing.* does not exist"):
        training.train(quick, str(tmp_path / "missing" / "run"), source=str(prepared_small))
    with pytest.raises(ValueError, match="fewer than one batch of 100000"):
        training.train(load_config(QUICK, {"train.batch_size": 100000}), str(tmp_path / "big"),
                       source=str(prepared_small))
    with pytest.raises(ValueError, match="--strategy='tpu' is not one of"):
        training.train(quick, str(tmp_path / "s"), source=str(prepared_small), strategy="tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        training.make_strategy("multi_worker")
    # a source whose tunes have no 4/4 measure
    waltz = tmp_path / "waltz"
    waltz.mkdir()
    (waltz / "w.abc").write_text("X:1\nT:Waltz\nM:3/4\nL:1/4\nK:C\nC D E|F G A|B c d|c3|\n")
    with pytest.raises(ValueError, match="(?i)empty|no usable|no .*measures"):
        training.train(quick, str(tmp_path / "w"), source=str(waltz), progress=False)
    # offline: the folk-rnn default fails fast and names --source
    from music_attr_vae.data import sources

    monkeypatch.setattr(sources, "FOLK_RNN_URL", "http://127.0.0.1:9/data_v2")
    start = time.time()
    with pytest.raises(ValueError, match="--source"):
        training.train(quick, str(tmp_path / "offline"), cache_dir=str(tmp_path / "cache"), progress=False)
    assert time.time() - start < 60


def test_resuming_with_another_network_is_refused(tmp_path, quick_workdir):
    import shutil

    workdir = tmp_path / "copy"
    shutil.copytree(quick_workdir, workdir)
    wider = load_config(QUICK, {"model.z_dim": 12})
    with pytest.raises(ValueError, match=r"different network \(model.z_dim: 8 -> 12\)"):
        training.train(wider, str(workdir))


def test_a_workdir_from_before_a_new_regularization_field_still_resumes(tmp_path, quick_workdir):
    import json
    import shutil

    workdir = tmp_path / "older"
    shutil.copytree(quick_workdir, workdir)
    saved = json.loads((workdir / "config.json").read_text())
    for spec in saved["regularization"].values():
        del spec["consistency"]  # written before the field existed
    (workdir / "config.json").write_text(json.dumps(saved))
    training._check_resume_compatible(str(workdir), load_config(QUICK))  # missing = the default: same network
    other = load_config(QUICK, {"regularization.pitch_range.consistency": 1.0})
    with pytest.raises(ValueError, match=r"regularization.pitch_range.consistency: 0.0 -> 1.0"):
        training._check_resume_compatible(str(workdir), other)


def test_cli_reports_a_bad_config_value(tmp_path, prepared_small):
    bad = subprocess.run(_train_cmd(tmp_path / "r", prepared_small, "--config.train.beta=-1"), env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "'train.beta' = -1.0 must be a number >= 0" in bad.stderr
    unknown = subprocess.run(_train_cmd(tmp_path / "r", prepared_small, "--config.regularization.swing.dim=0"),
                             env=_env(), capture_output=True, text=True, timeout=120)
    assert unknown.returncode != 0 and "swing" in unknown.stderr
    assert not (tmp_path / "r").exists()
