"""Serving under faults: size limits, all-or-nothing outputs, named errors, umask modes, a full disk at export."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import resource
import subprocess
import sys

import pytest
import tensorflow as tf

from music_attr_vae.serving import client, editing, export, limits

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BOOK = "reelsu-z.abc"


def _cli(*args, umask=None):
    return subprocess.run([sys.executable, "-m", "music_attr_vae", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, umask=-1 if umask is None else umask)


def _tree(folder) -> dict:
    """{name: sha256} of the files of ``folder``."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(pathlib.Path(folder).iterdir())
            if p.is_file()}


@contextlib.contextmanager
def _tmpfs(path: pathlib.Path, options: str):
    """A tmpfs mounted at ``path`` (skips when this process may not mount)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mount.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture(scope="module")
def saved(quick_workdir) -> pathlib.Path:
    return quick_workdir / "saved_model"


@pytest.fixture(scope="module")
def attribute(saved) -> str:
    return next(iter(export.read_metadata(str(saved))["attribute_maps"]))


# ---------------------------------------------------------------- item 8: every size is bounded


@pytest.mark.slow
def test_every_signature_refuses_oversized_requests_naming_the_limit(saved, attribute):
    loaded = tf.saved_model.load(str(saved))
    meta = json.loads(loaded.metadata()["json"].numpy())
    assert meta["limits"] == limits.LIMITS == {
        "MAX_BATCH": limits.MAX_BATCH, "MAX_SAMPLE": limits.MAX_SAMPLE, "MAX_VALUES": limits.MAX_VALUES,
        "MAX_GRID": limits.MAX_GRID}
    t0, s0 = tf.constant(0.0), tf.constant(0, tf.int32)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in (10**7, 2**31 - 1, limits.MAX_SAMPLE + 1):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"MAX_SAMPLE = {limits.MAX_SAMPLE}"):
            loaded.sample(tf.constant(n, tf.int32), s0, t0)
    too_many = limits.MAX_BATCH + 1
    tokens = tf.fill([too_many, 24], 31)  # HOLD: valid tokens, too many measures
    z = tf.zeros([too_many, meta["z_dim"]])
    calls = {
        "encode": lambda: loaded.encode(tokens),
        "decode": lambda: loaded.decode(z, t0, s0),
        "attributes": lambda: loaded.attributes(tokens),
        "teacher_forced_nll": lambda: loaded.teacher_forced_nll(tokens),
        "traverse": lambda: loaded.traverse(tokens, tf.constant(attribute), tf.constant([0.0, 1.0]), t0, s0),
        "traverse_z": lambda: loaded.traverse_z(z, tf.constant(attribute), tf.constant([0.0, 1.0]), t0, s0),
        "set_attribute": lambda: loaded.set_attribute(tokens, tf.constant(attribute), tf.constant(0.5), t0, s0),
    }
    for name, call in calls.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"MAX_BATCH = {limits.MAX_BATCH}"):
            call()
    one = tf.zeros([1, meta["z_dim"]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"MAX_VALUES = {limits.MAX_VALUES}"):
        loaded.traverse_z(one, tf.constant(attribute), tf.zeros([limits.MAX_VALUES + 1]), t0, s0)
    grid = tf.zeros([limits.MAX_GRID // limits.MAX_VALUES + 1, meta["z_dim"]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"MAX_GRID = {limits.MAX_GRID}"):
        loaded.traverse_z(grid, tf.constant(attribute), tf.zeros([limits.MAX_VALUES]), t0, s0)
    # refused before allocating: the process's peak memory grew by far less than the 5.7 GB of n=10**7
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 1_000_000  # KiB
    # the limit itself is allowed
    out = loaded.sample(tf.constant(limits.MAX_BATCH // 256, tf.int32), s0, t0)
    assert out["tokens"].shape == (limits.MAX_BATCH // 256, 24)
    # the NumPy client names the limit without calling the model
    served = client.ServedModel(str(saved))
    with pytest.raises(ValueError, match="MAX_SAMPLE = "):
        served.sample(10**7)
    with pytest.raises(ValueError, match="seed = 99999999999 is outside the int32 range"):
        served.sample(2, seed=99999999999)


def test_cli_sizes_and_seeds_are_bounded_with_named_errors(saved, attribute, nottingham_dir, tmp_path):
    steps = _cli("generate", f"--saved_model={saved}", f"--attribute={attribute}", "--steps=100000000",
                 f"--out={tmp_path / 'g'}")
    assert steps.returncode == 2 and f"--steps=100000000: at most MAX_VALUES = {limits.MAX_VALUES}" in steps.stderr
    grid = _cli("generate", f"--saved_model={saved}", f"--attribute={attribute}", "--steps=100",
                "--num_traversals=1000", f"--out={tmp_path / 'g'}")
    assert grid.returncode == 2 and f"MAX_GRID = {limits.MAX_GRID}" in grid.stderr
    seed = _cli("generate", f"--saved_model={saved}", f"--attribute={attribute}", "--seed=99999999999",
                f"--out={tmp_path / 'g'}")
    assert seed.returncode != 0 and "--seed=99999999999" in seed.stderr and "Traceback" not in seed.stderr
    edit_seed = _cli("edit", f"--saved_model={saved}", f"--tune={nottingham_dir / BOOK}", "--tune_index=0",
                     "--measures=1", f"--set={attribute}=0.5", "--seed=99999999999", f"--out={tmp_path / 'e'}")
    assert edit_seed.returncode != 0 and "--seed=99999999999" in edit_seed.stderr
    assert "Traceback" not in edit_seed.stderr and not (tmp_path / "g").exists() and not (tmp_path / "e").exists()


# ---------------------------------------------------------------- item 7: all or nothing, nothing foreign touched


@pytest.mark.slow
def test_edit_outputs_are_all_or_nothing_and_foreign_files_are_kept(saved, attribute, nottingham_dir, tmp_path,
                                                                    monkeypatch):
    served = client.ServedModel(str(saved))
    tune = editing.load_tune(str(nottingham_dir / BOOK), 0)
    settings = editing.parse_settings([f"{attribute}+=0.2"], list(served.maps))
    first = editing.edit_tune(served, tune, [2], settings)
    second = editing.edit_tune(served, tune, [3, 4], settings)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a file the program did not write
    editing.write_outputs(str(out), tune, first)
    before = _tree(out)
    assert set(before) == {"notes.txt", *editing.OUTPUT_FILES.values()}

    # the last write fails: nothing of the second edit lands, the first edit's files are intact
    real = editing.fileio.write_json

    def full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(editing.fileio, "write_json", full_disk)
    with pytest.raises(editing.EditError, match=r"--out=.*No space left on device"):
        editing.write_outputs(str(out), tune, second)
    assert _tree(out) == before and sorted(os.listdir(out)) == sorted(before)  # no temporary left either
    # a new --out whose writes fail is not left behind
    with pytest.raises(editing.EditError):
        editing.write_outputs(str(tmp_path / "new"), tune, second)
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(editing.fileio, "write_json", real)

    # a rerun replaces its own earlier files and keeps the foreign one
    editing.write_outputs(str(out), tune, second)
    assert json.loads((out / "report.json").read_text())["edited_bars"] == [3, 4]
    assert (out / "notes.txt").read_text() == "mine"

    # a file of an output's name that no earlier edit wrote is never overwritten
    other = tmp_path / "other"
    other.mkdir()
    (other / "edited.mid").write_bytes(b"not ours")
    with pytest.raises(editing.EditError, match=r"already holds edited.mid, not written by an earlier run"):
        editing.write_outputs(str(other), tune, second)
    assert _tree(other) == {"edited.mid": hashlib.sha256(b"not ours").hexdigest()}


# ---------------------------------------------------------------- item 9: named errors for bad outputs


@pytest.mark.slow
def test_generate_and_edit_name_an_unusable_out(saved, attribute, nottingham_dir, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    gen = _cli("generate", f"--saved_model={saved}", f"--attribute={attribute}", f"--out={a_file}")
    assert gen.returncode == 2 and f"--out={a_file}: {a_file} exists and is not a folder" in gen.stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "traversal.png").write_bytes(b"someone's picture")
    gen = _cli("generate", f"--saved_model={saved}", f"--attribute={attribute}", f"--out={foreign}")
    assert gen.returncode == 2 and "already holds traversal.png" in gen.stderr
    assert (foreign / "traversal.png").read_bytes() == b"someone's picture"
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as read_only:
        for command in (["generate", f"--attribute={attribute}"],
                        ["edit", f"--tune={nottingham_dir / BOOK}", "--tune_index=0", "--measures=1",
                         f"--set={attribute}=0.5"]):
            proc = _cli(command[0], f"--saved_model={saved}", *command[1:], f"--out={read_only / 'out'}")
            assert proc.returncode == 2, proc.stderr[-2000:]
            assert f"--out={read_only / 'out'}: cannot write the outputs there: Read-only file system" in proc.stderr
            assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- item 10: outputs follow the umask


@pytest.mark.slow
def test_generate_edit_and_evaluate_outputs_follow_the_umask(saved, attribute, nottingham_dir, quick_workdir,
                                                             tmp_path):
    gen, edit = tmp_path / "gen", tmp_path / "edit"
    proc = _cli("generate", f"--saved_model={saved}", f"--attribute={attribute}", "--steps=3", f"--out={gen}",
                umask=0o027)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _cli("edit", f"--saved_model={saved}", f"--tune={nottingham_dir / BOOK}", "--tune_index=0",
                "--measures=1", f"--set={attribute}=0.5", f"--out={edit}", umask=0o027)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from music_attr_vae.evaluation import entry_points as ev
    from music_attr_vae.workdir import data_dir_of

    old = os.umask(0o027)
    try:
        ev.evaluate_saved_model(str(saved), data_dir_of(str(quick_workdir)), output_dir=str(tmp_path / "eval"),
                                options=ev.EvalOptions(traversal_latents=10, traversal_steps=4, surface_resolution=5,
                                                       strip_steps=3, mi_max_points=300))
    finally:
        os.umask(old)
    for folder in (gen, edit, tmp_path / "eval"):
        assert os.stat(folder).st_mode & 0o777 == 0o750
        for root, dirs, files in os.walk(folder):
            for name in dirs:
                assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o750, (root, name)
            for name in files:
                assert os.stat(os.path.join(root, name)).st_mode & 0o777 == 0o640, (root, name)
    assert len(os.listdir(gen)) == 4 and len(os.listdir(edit)) == 6 and (tmp_path / "eval" / "metrics.json").exists()


# ---------------------------------------------------------------- item 9: a full disk at export


@pytest.mark.slow
def test_export_on_a_full_disk_keeps_the_previous_export_and_names_the_folder(quick_workdir, tmp_path):
    from music_attr_vae import workdir

    size = sum(p.stat().st_size for p in (quick_workdir / "saved_model").rglob("*") if p.is_file())
    with _tmpfs(tmp_path / "disk", f"size={int(size * 1.5) // 4096 * 4096 + 8192}") as disk:
        target = disk / "saved_model"
        subprocess.run(["cp", "-r", str(quick_workdir / "saved_model"), str(target)], check=True)
        before = {str(p.relative_to(target)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in target.rglob("*") if p.is_file()}
        model, config = workdir.load_model(str(quick_workdir))
        with pytest.raises(export.ExportError, match=rf"could not write the SavedModel to {target} .*"
                                                     r"the previous export there is kept"):
            export.export_saved_model(model, config, str(target), jit_compile=False)
        after = {str(p.relative_to(target)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in target.rglob("*") if p.is_file()}
        assert after == before and sorted(os.listdir(disk)) == ["saved_model"]  # no half export left behind
