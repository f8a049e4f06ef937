"""`evaluate` and `compare` end to end.

Two kinds of model are evaluated:

* a model with a *known* latent code on the real test measures of the small
  corpus (z[0] = 4 * rhythmic complexity - 1, z[2] = 3 * pitch range - 1,
  other dims a small token-determined perturbation; the decoder returns the
  nearest known measure), so the metrics have answers known in advance;
* the shared `quick` model, through the CLI (workdir) and its SavedModel, to
  check the metrics.json schema, the figure files, and that both routes agree.
"""

from __future__ import annotations

import json
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC
from music_attr_vae.evaluation import compare
from music_attr_vae.evaluation import adapters, entry_points
from music_attr_vae.evaluation import evaluate as ev

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST = ev.EvalOptions(traversal_latents=40, traversal_steps=7, surface_resolution=12, strip_steps=5)


class KnownCodeModel(adapters.LatentModel):
    """Encoder with a known code; decoder = the nearest measure of a table (see module docstring)."""

    def __init__(self, table: np.ndarray, z_dim: int = 6, noise: float = 0.02):
        self.z_dim = z_dim
        self.noise = noise
        self.batch_size = 128
        self.projection = np.random.default_rng(0).normal(size=(24, z_dim)).astype(np.float32)
        self.table = np.unique(np.asarray(table, np.int32), axis=0)
        self.table_z = self._code(self.table)

    def _code(self, tokens: np.ndarray) -> np.ndarray:
        values = attrs.compute_all(tokens)
        z = self.noise * np.tanh((tokens.astype(np.float32) / 31.0) @ self.projection)
        z[:, 0] = 4 * values[:, 0] - 1
        z[:, 2] = 3 * values[:, 1] - 1
        return z.astype(np.float32)

    def _encode_batch(self, tokens):
        z = self._code(tokens)
        return z, np.full_like(z, -2.0)

    def _decode_batch(self, z):
        distances = ((z[:, None, :] - self.table_z[None]) ** 2).sum(-1)
        return self.table[distances.argmin(1)]

    def _logits_batch(self, z, tokens):
        return 10.0 * np.eye(CODEC.vocab_size, dtype=np.float32)[self._decode_batch(z)]


def check_png(path: pathlib.Path, min_width: int = 400) -> None:
    """A real, non-blank PNG image."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    image = matplotlib.image.imread(str(path))
    assert image.shape[0] >= 200 and image.shape[1] >= min_width, (path, image.shape)
    assert image[..., :3].std() > 0.05, f"{path} looks blank"


def check_schema(result: dict, z_dim: int, options: ev.EvalOptions) -> None:
    """Keys, types and value ranges of metrics.json (documented in evaluation/evaluate.py)."""
    assert result["schema_version"] == ev.SCHEMA_VERSION
    assert set(result) >= {"model", "data", "reconstruction", "attributes", "disentanglement", "summary",
                           "figures", "options", "timing_s", "created"}
    assert result["model"]["z_dim"] == z_dim and isinstance(result["model"]["name"], str)
    assert result["data"]["split"] == "test" and result["data"]["n_test"] > 0
    rec = result["reconstruction"]
    for key in ("token_accuracy_free_running", "measure_accuracy_free_running", "token_accuracy_teacher_forced"):
        assert 0.0 <= rec[key] <= 1.0, key
    assert rec["nll_per_token"] >= 0.0 and rec["kl_per_measure"] >= 0.0
    assert set(result["attributes"]) == set(attrs.ATTRIBUTE_NAMES)
    for name, entry in result["attributes"].items():
        interp = entry["interpretability"]
        assert 0 <= interp["dim"] < z_dim and 0.0 <= interp["r2"] <= 1.0
        assert len(interp["mutual_information"]) == z_dim
        assert entry["probe_dim_source"] == ("regularised" if entry["regularised"] else "max_mi")
        assert -1.0 <= entry["spearman"] <= 1.0
        for key in ("isotonic_r2", "linear_r2", "mig", "sap"):
            assert 0.0 <= entry[key] <= 1.0, (name, key)
        control = entry["controllability"]
        assert control["dim"] == entry["probe_dim"]
        assert len(control["steps"]) == options.traversal_steps and np.all(np.diff(control["steps"]) > 0)
        assert 0.0 <= control["strictly_increasing_fraction"] <= control["monotone_fraction"] <= 1.0
        assert -1.0 <= control["spearman"] <= 1.0
    assert 0.0 <= result["disentanglement"]["modularity"] <= 1.0
    summary = result["summary"]
    assert summary["reconstruction_accuracy"] == rec["token_accuracy_free_running"]
    means = np.mean([e["interpretability"]["r2"] for e in result["attributes"].values()])
    assert summary["interpretability_mean"] == pytest.approx(means)
    assert result["timing_s"]["total"] > 0


def _eval_files_ok(eval_dir: pathlib.Path, result: dict) -> None:
    assert set(result["figures"]) == {"latent_space", "attribute_surfaces", "traversals"}
    for file_name in result["figures"].values():
        check_png(eval_dir / file_name)
    on_disk = json.loads((eval_dir / ev.METRICS_FILE).read_text())
    assert on_disk == json.loads(json.dumps(ev._jsonable(result)))
    with np.load(eval_dir / ev.FIGURE_DATA_FILE) as data:
        assert data["surfaces"].shape[0] == len(attrs.ATTRIBUTE_NAMES)
    assert not [p for p in os.listdir(eval_dir) if p.endswith(".tmp") or p.startswith(".")]


# ---------------------------------------------------------------- a model with a known code


@pytest.fixture(scope="module")
def test_arrays(prepared_small):
    from music_attr_vae.data import loader

    arrays = loader.load_arrays(str(prepared_small), "test")
    return arrays["tokens"], arrays["attributes"]


def test_evaluate_recovers_a_known_code(test_arrays, tmp_path):
    tokens, attribute_values = test_arrays
    model = KnownCodeModel(tokens)
    info = ev.ModelInfo(name="known", config_name="known_code", source="test", path="-", z_dim=6,
                        regularization={"rhythmic_complexity": {"dim": 0}, "pitch_range": {"dim": 2}})
    result = ev.evaluate(model, info, tokens, attribute_values, data_dir="prepared_small",
                         output_dir=str(tmp_path / "eval"), tensorboard_dir=str(tmp_path / "tb"), options=FAST)
    check_schema(result, 6, FAST)
    _eval_files_ok(tmp_path / "eval", result)
    assert os.listdir(tmp_path / "tb"), "no TensorBoard events written"

    # The decoder returns the nearest table measure, i.e. the measure itself.
    rec = result["reconstruction"]
    assert rec["token_accuracy_free_running"] == 1.0 and rec["measure_accuracy_free_running"] == 1.0
    assert rec["token_accuracy_teacher_forced"] == 1.0
    assert rec["nll_per_token"] == pytest.approx(np.log1p(31 * np.exp(-10.0)), rel=1e-4)
    # KL per dim with log_var = -2: 0.5 * (e^-2 + mu^2 - 1 + 2)
    z = model._code(np.asarray(tokens))
    expected_kl = np.mean(0.5 * np.sum(np.exp(-2.0) + z.astype(np.float64) ** 2 + 1.0, axis=1))
    assert rec["kl_per_measure"] == pytest.approx(expected_kl, rel=1e-5)

    per = result["attributes"]
    for name, dim in (("rhythmic_complexity", 0), ("pitch_range", 2)):
        assert per[name]["regularised"] and per[name]["probe_dim"] == dim
        assert per[name]["interpretability"]["dim"] == dim
        assert per[name]["interpretability"]["r2"] == pytest.approx(1.0, abs=1e-6)
        assert per[name]["spearman"] == pytest.approx(1.0, abs=1e-6)
        assert per[name]["isotonic_r2"] == pytest.approx(1.0, abs=1e-6)
        assert per[name]["mig"] > 0.5
        control = per[name]["controllability"]
        assert control["monotone_fraction"] > 0.8 and control["spearman"] > 0.8
    assert not per["contour"]["regularised"] and per["contour"]["probe_dim_source"] == "max_mi"
    assert result["summary"]["regularised_attributes"] == ["rhythmic_complexity", "pitch_range"]


def test_seen_in_matches_a_set_of_rows(prepared_small):
    from music_attr_vae.data import loader

    test = loader.load_arrays(str(prepared_small), "test")["tokens"]
    train = loader.load_arrays(str(prepared_small), "train")["tokens"]
    expected = np.array([tuple(row) in {tuple(r) for r in train} for row in test])
    seen = ev.seen_in(test, train)
    assert seen.dtype == bool and np.array_equal(seen, expected)
    assert 0 < seen.sum() < len(seen), "the small corpus shares some but not all test measures with training"
    assert not ev.seen_in(test, train[:0]).any()


def test_seen_means_in_the_data_the_model_trained_on(prepared_small, nottingham_dir, tmp_path):
    """A test split scored for a model trained on other data: 'seen' follows that model's own training split."""
    from music_attr_vae.data import prepare

    other = tmp_path / "other"  # one Nottingham book that is not in the small corpus
    prepare.prepare(str(nottingham_dir / "hpps.abc"), str(other), max_shift=0, seed=0, progress=False)
    _, split, tokens, _, own = entry_points.evaluation_data(None, str(prepared_small), str(tmp_path / "out"))
    _, _, same, _, foreign = entry_points.evaluation_data(None, str(prepared_small), str(tmp_path / "out"), str(other))
    assert split == "test" and np.array_equal(tokens, same)
    assert own.sum() > 0 and foreign.sum() < own.sum()
    from music_attr_vae.data import loader

    np.testing.assert_array_equal(foreign, ev.seen_in(tokens, loader.load_arrays(str(other), "train")["tokens"]))


def test_evaluate_reports_seen_and_unseen_measures_apart(prepared_small, tmp_path):
    """A decoder that can only emit training measures: exact on seen test measures, never on unseen ones."""
    from music_attr_vae.data import loader

    test = loader.load_arrays(str(prepared_small), "test")
    train_tokens = loader.load_arrays(str(prepared_small), "train")["tokens"]
    tokens, attribute_values = test["tokens"], test["attributes"]
    seen = ev.seen_in(tokens, train_tokens)
    model = KnownCodeModel(train_tokens)
    info = ev.ModelInfo(name="memoriser", config_name="known_code", source="test", path="-", z_dim=6,
                        regularization={"rhythmic_complexity": {"dim": 0}, "pitch_range": {"dim": 2}})
    result = ev.evaluate(model, info, tokens, attribute_values, data_dir="prepared_small",
                         output_dir=str(tmp_path / "eval"), options=dataclasses.replace(FAST, figures=False),
                         seen=seen)
    subsets = result["subsets"]
    assert subsets["seen"]["n"] == result["data"]["n_seen"] == int(seen.sum())
    assert subsets["unseen"]["n"] == result["data"]["n_unseen"] == int((~seen).sum())
    assert subsets["seen"]["reconstruction"]["measure_accuracy_free_running"] == 1.0
    assert subsets["unseen"]["reconstruction"]["measure_accuracy_free_running"] == 0.0
    overall = result["reconstruction"]["token_accuracy_free_running"]
    unseen = result["summary"]["reconstruction_accuracy_unseen"]
    assert unseen == subsets["unseen"]["reconstruction"]["token_accuracy_free_running"] < overall < 1.0
    assert result["summary"]["measure_accuracy_unseen"] == 0.0
    for subset in ("seen", "unseen"):
        per = subsets[subset]["attributes"]
        assert set(per) == set(attrs.ATTRIBUTE_NAMES)
        assert per["pitch_range"]["interpretability"]["r2"] == pytest.approx(1.0, abs=1e-6)
        assert "controllability" in per["pitch_range"] and "modularity" in subsets[subset]["disentanglement"]
    table = compare.results_table([result])
    assert "unseen" in table.splitlines()[0] and f"{100 * unseen:.2f}%" in table


def test_evaluate_rejects_a_regularised_dim_outside_the_latent(test_arrays, tmp_path):
    tokens, attribute_values = test_arrays
    info = ev.ModelInfo(name="bad", config_name="bad", source="test", path="-", z_dim=6,
                        regularization={"pitch_range": {"dim": 9}})
    with pytest.raises(ValueError, match="dim 9"):
        ev.evaluate(KnownCodeModel(tokens[:50]), info, tokens[:50], attribute_values[:50], data_dir="-",
                    output_dir=str(tmp_path), options=FAST)


# ---------------------------------------------------------------- the quick model


def _cli(*args, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "music_attr_vae", *args], capture_output=True, text=True,
                          env=env, cwd=str(REPO_ROOT), timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


CLI_FAST = ["--traversal_latents=40", "--traversal_steps=7", "--surface_resolution=12"]


@pytest.fixture(scope="module")
def quick_evaluated(quick_workdir):
    """The quick workdir after `music-attr-vae evaluate --workdir=...`."""
    proc = _cli("evaluate", f"--workdir={quick_workdir}", *CLI_FAST)
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["n_test"] > 0
    return quick_workdir


def test_evaluate_cli_on_the_quick_model(quick_evaluated):
    eval_dir = quick_evaluated / "eval"
    result = ev.load_metrics(str(eval_dir))
    config = json.loads((quick_evaluated / "config.json").read_text())
    z_dim = result["model"]["z_dim"]
    options = ev.EvalOptions(traversal_latents=40, traversal_steps=7, surface_resolution=12)
    check_schema(result, z_dim, options)
    _eval_files_ok(eval_dir, result)
    assert result["model"]["source"] == "workdir" and result["model"]["name"] == quick_evaluated.name
    assert result["model"]["config"] == config.get("name", result["model"]["config"])
    assert any(p.startswith("events.out.tfevents") for p in os.listdir(quick_evaluated / "tensorboard" / "eval"))
    from music_attr_vae.data import loader

    assert result["data"]["n_test"] == len(loader.load_arrays(result["data"]["data_dir"], "test")["tokens"])
    for name in result["model"]["regularization"]:
        assert result["attributes"][name]["regularised"]
        assert result["attributes"][name]["probe_dim"] == result["model"]["regularization"][name]["dim"]


def test_eval_label_keeps_other_corpora_off_the_own_evaluation(tmp_path):
    own, other = str(tmp_path / "data"), str(tmp_path / "hpps")
    assert entry_points.eval_label(None, own, own) == ""
    assert entry_points.eval_label(None, own + os.sep + ".", own) == ""  # the same folder, spelled differently
    assert entry_points.eval_label(None, other, own) == entry_points.source_label(other, "data")
    assert entry_points.eval_label(None, own, None) == entry_points.source_label(own, "data")  # no workdir known
    assert entry_points.eval_label("tunes/*.abc", own, own).startswith("source-tunes-")
    assert entry_points.eval_label("a.abc", own, own) != entry_points.eval_label("b/a.abc", own, own)


def test_evaluate_cli_on_another_corpus(quick_evaluated, nottingham_dir):
    """--source: every measure of tunes the model never trained on, seen/unseen against its training split."""
    source = str(nottingham_dir / "reelsa-c.abc")
    proc = _cli("evaluate", f"--workdir={quick_evaluated}", f"--source={source}", "--nofigures", *CLI_FAST)
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    eval_dir = quick_evaluated / "eval" / entry_points.source_label(source)
    result = ev.load_metrics(str(eval_dir))
    data = result["data"]
    assert data["source"] == source and data["split"] == "all" and printed["split"] == "all"
    assert data["data_dir"] == str(eval_dir / "data")
    summary = json.loads((eval_dir / "data" / "summary.json").read_text())
    assert data["n_test"] == summary["splits"]["train"]["measures"] > 100  # untransposed: one example a measure
    assert data["n_seen"] + data["n_unseen"] == data["n_test"] and data["n_unseen"] > data["n_seen"]
    assert result["subsets"]["unseen"]["n"] == data["n_unseen"] == printed["n_unseen"]
    assert 0 < result["summary"]["reconstruction_accuracy_unseen"] < 1
    # the workdir's own evaluation is left as it was
    assert ev.load_metrics(str(quick_evaluated / "eval"))["data"]["split"] == "test"


def test_evaluate_cli_on_another_prepared_dataset_keeps_the_own_evaluation(quick_evaluated, nottingham_dir, tmp_path):
    """--data_dir of another prepared corpus: written beside DIR/eval, never over it."""
    from music_attr_vae.data import loader, prepare

    other = tmp_path / "hpps"  # one Nottingham book that is not in the small corpus
    prepare.prepare(str(nottingham_dir / "hpps.abc"), str(other), max_shift=0, seed=0, progress=False)
    own = (quick_evaluated / "eval" / "metrics.json").read_bytes()
    _cli("evaluate", f"--workdir={quick_evaluated}", f"--data_dir={other}", "--nofigures", *CLI_FAST)
    eval_dir = quick_evaluated / "eval" / entry_points.source_label(str(other), "data")
    assert eval_dir.name.startswith("data-hpps-")
    result = ev.load_metrics(str(eval_dir))
    assert result["data"]["data_dir"] == str(other) and result["data"]["split"] == "test"
    assert result["data"]["n_test"] == len(loader.load_arrays(str(other), "test")["tokens"])
    assert (quick_evaluated / "eval" / "metrics.json").read_bytes() == own
    # the export of the same workdir, on the same other corpus, by default: the same place
    options = ev.EvalOptions(traversal_latents=40, traversal_steps=7, figures=False)
    exported = entry_points.evaluate_saved_model(str(quick_evaluated / "saved_model"), str(other), options=options)
    assert exported["data"]["n_test"] == result["data"]["n_test"]
    assert ev.load_metrics(str(eval_dir))["model"]["source"] == "saved_model"
    assert (quick_evaluated / "eval" / "metrics.json").read_bytes() == own


def test_saved_model_evaluation_matches_the_workdir(quick_evaluated, tmp_path):
    workdir_result = ev.load_metrics(str(quick_evaluated / "eval"))
    options = ev.EvalOptions(traversal_latents=40, traversal_steps=7, figures=False)
    result = entry_points.evaluate_saved_model(str(quick_evaluated / "saved_model"), workdir_result["data"]["data_dir"],
                                     output_dir=str(tmp_path / "eval"), name="quick_export", options=options)
    assert result["model"]["source"] == "saved_model" and result["figures"] == {}
    assert (tmp_path / "eval" / ev.METRICS_FILE).exists()
    a, b = workdir_result["reconstruction"], result["reconstruction"]
    for key in ("token_accuracy_free_running", "token_accuracy_teacher_forced"):
        assert b[key] == pytest.approx(a[key], abs=2e-3), key
    assert b["nll_per_token"] == pytest.approx(a["nll_per_token"], rel=1e-3, abs=1e-4)
    assert result["model"]["regularization"].keys() == workdir_result["model"]["regularization"].keys()
    for name in attrs.ATTRIBUTE_NAMES:
        assert result["attributes"][name]["interpretability"]["r2"] == pytest.approx(
            workdir_result["attributes"][name]["interpretability"]["r2"], abs=1e-3)


def test_compare_cli_writes_table_and_grids(quick_evaluated, tmp_path):
    # Two "models": the quick model's evaluation, and a copy of it under another directory.
    other = tmp_path / "copy"
    shutil.copytree(quick_evaluated / "eval", other / "eval")
    output = tmp_path / "results.md"
    proc = _cli("compare", str(quick_evaluated), str(other), f"--output={output}", "--names=first,second")
    text = output.read_text()
    assert text.split("![")[0].strip() in proc.stdout
    rows = [line for line in text.splitlines() if line.startswith("| first") or line.startswith("| second")]
    assert len(rows) == 2 + 2 * len(attrs.ATTRIBUTE_NAMES)  # main table + per-attribute table
    header = text.splitlines()[0]
    for column in ("Recon. acc. (free-running)", "Interp. RC", "Interp. PR", "Interp. mean", "Spearman", "MIG",
                   "SAP", "Modularity"):
        assert column in header
    metrics_json = ev.load_metrics(str(quick_evaluated / "eval"))
    acc = metrics_json["reconstruction"]["token_accuracy_free_running"]
    assert f"{100 * acc:.2f}%" in rows[0]
    for suffix in compare.GRID_FILES.values():
        check_png(tmp_path / f"results_{suffix}", min_width=500)


def test_compare_reports_missing_metrics_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="evaluate"):
        compare.compare([str(tmp_path / "empty")], evaluate_missing=False)
    with pytest.raises(FileNotFoundError, match="neither an evaluated model"):
        compare.compare([str(tmp_path / "empty")])
    proc = _cli("evaluate", "--workdir=a", "--saved_model=b", check=False)
    assert proc.returncode != 0 and "exactly one of --workdir and --saved_model" in proc.stderr
