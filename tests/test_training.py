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


def _modes(root) -> dict:
    """{relative path: permission bits} of every file and folder under ``root``."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(folder, name)
            out[os.path.relpath(full, root)] = os.stat(full).st_mode & 0o777
    return out


@pytest.mark.slow
def test_sigkill_resume_export_reload_round_trip(tmp_path, prepared_small, quick_workdir):
    """Kill a `quick` run 5 times in a row, each time right after a new checkpoint, rerun it: each run resumes
    from the last checkpoint and the last ends exactly like an uninterrupted run (same step count, same weights),
    with every file under umask 027 (and the killed holders' lock never blocks), then exports a SavedModel that
    loads without the package."""
    workdir = tmp_path / "run"
    config = load_config(QUICK)
    steps_per_epoch = config.train.steps_per_epoch
    total = steps_per_epoch * config.train.epochs
    every = "--config.train.checkpoint_every_steps=2"  # tiny steps per kill; checkpoints do not change the numbers
    assert 2 < steps_per_epoch

    killed_at = []
    for _ in range(5):
        before = max(_checkpoint_steps(workdir), default=0)
        proc = subprocess.Popen(_train_cmd(workdir, prepared_small, every), env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, umask=0o027)
        deadline = time.time() + 240
        try:
            while time.time() < deadline and proc.poll() is None and max(_checkpoint_steps(workdir), default=0) <= before:
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)  # right after this run's first checkpoint
        finally:
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, proc.stdout.read()[-3000:]
        killed_at.append(max(_checkpoint_steps(workdir)))
        assert before < killed_at[-1] < total  # every run got further, none reached the end
    assert any(step % steps_per_epoch for step in killed_at)  # some kills lost work mid-epoch
    assert not (workdir / "saved_model").exists()

    rerun = subprocess.run(_train_cmd(workdir, prepared_small, every), env=_env(), capture_output=True, text=True,
                           timeout=300, umask=0o027)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    events = wd.read_history(str(workdir))
    resume = [e for e in events if e["event"] == "resume"]
    assert [e["step"] for e in resume] == killed_at  # each run continued from the last checkpoint, not from 0
    assert [e["step_in_epoch"] for e in resume] == [k % steps_per_epoch for k in killed_at]
    assert [e["step"] for e in events if e["event"] == "export"] == [total]

    # Same seed, same data order and noise per step: identical to the uninterrupted run.
    resumed, _ = wd.load_model(str(workdir))
    straight, _ = wd.load_model(str(quick_workdir))
    assert max(_checkpoint_steps(quick_workdir)) == total
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # Every file and folder of the workdir (checkpoints, logs, config, SavedModel, lock) follows the umask.
    modes = _modes(workdir)
    assert {"config.json", "history.jsonl", ".lock", "saved_model/saved_model.pb", "checkpoints/checkpoint"} <= set(modes)
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o750 if (workdir / p).is_dir() else 0o640)}
    assert not wrong and os.stat(workdir).st_mode & 0o777 == 0o750

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


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, prepared_small, monkeypatch):
    config = load_config(QUICK, {"train.inject_nan_at_step": 8})
    workdir = tmp_path / "nan"
    reads = []
    real = training.run_data.reference_tokens
    monkeypatch.setattr(training.run_data, "reference_tokens", lambda d: reads.append(d) or real(d))
    with pytest.raises(training.NonFiniteLossError, match=r"the loss became nan at step 8 .*ckpt-5"):
        training.train(config, str(workdir), source=str(prepared_small), progress=False)
    assert reads == []  # the test split is read for the epoch image and the export, not before training starts
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


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from music_attr_vae import workdir
    workdir.WorkdirLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_a_second_train_on_a_locked_workdir_is_refused_and_a_killed_holder_frees_it(tmp_path, prepared_small):
    workdir = tmp_path / "busy"
    workdir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], env=_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(wd.WorkdirBusyError, match=rf"is in use: process {holder.pid} on .*holds .*\.lock"):
            training.train(load_config(QUICK), str(workdir), source=str(prepared_small), progress=False)
        assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.kill()  # SIGKILL: the holder never releases the lock itself
        holder.wait(timeout=60)
    with wd.WorkdirLock(str(workdir)) as lock:  # the kernel dropped the dead holder's lock
        assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(wd.WorkdirBusyError, match=rf"process {os.getpid()} "):
            wd.WorkdirLock(str(workdir)).acquire()  # flock excludes a second holder in one process too
    assert lock.fd is None


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, prepared_small, quick_workdir,
                                                                         capfd):
    import shutil

    workdir = tmp_path / "damaged"
    shutil.copytree(quick_workdir, workdir)
    steps = _checkpoint_steps(workdir)
    newest, previous = max(steps), sorted(steps)[-2]
    (data,) = (workdir / "checkpoints").glob(f"ckpt-{newest}.data-*")
    with open(data, "r+b") as handle:  # a save cut short: the data file is half its size
        handle.truncate(data.stat().st_size // 2)

    # load_model (and so evaluate) names the bad file and uses the previous checkpoint
    model, config = wd.load_model(str(workdir))
    assert data.name in capfd.readouterr().err
    from music_attr_vae.model.vae import build_model

    reference = build_model(config)
    tf.train.Checkpoint(model=reference).restore(str(workdir / "checkpoints" / f"ckpt-{previous}")).expect_partial()
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)

    # train resumes from it, says so, and ends with the uninterrupted run's weights
    result = training.train(load_config(QUICK), str(workdir), source=str(prepared_small), progress=False)
    assert result["resumed_from_step"] == previous and result["steps"] == max(steps)
    assert data.name in capfd.readouterr().err
    damaged = [e for e in wd.read_history(str(workdir)) if e["event"] == "damaged_checkpoints"]
    assert len(damaged) == 1 and data.name in damaged[0]["skipped"][0]
    resumed, _ = wd.load_model(str(workdir))
    straight, _ = wd.load_model(str(quick_workdir))
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # no intact checkpoint at all: a named error, not a silent restart from step 0
    for data_file in (workdir / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(b"")
    with pytest.raises(wd.NoIntactCheckpointError, match=r"no intact checkpoint in .*ckpt-\d+\.data-"):
        wd.load_model(str(workdir))


@pytest.mark.slow
def test_cli_names_a_bad_config_flag_or_file(tmp_path, prepared_small):
    unknown = subprocess.run(_train_cmd(tmp_path / "r", prepared_small, "--config.foo=1"), env=_env(),
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "music-attr-vae train: error: --config.foo: the config has no field 'foo'" in unknown.stderr
    missing = tmp_path / "nope.py"
    cmd = [sys.executable, "-m", "music_attr_vae", "train", f"--config={missing}", f"--workdir={tmp_path / 'r'}"]
    gone = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    assert f"--config={missing}: cannot load the config file" in gone.stderr and "No such file" in gone.stderr
    missing.write_text("def get_config(:\n")
    broken = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert f"--config={missing}: the config file failed to load (SyntaxError" in broken.stderr
    assert not (tmp_path / "r").exists()
