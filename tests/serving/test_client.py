"""ServedModel, the one client of a SavedModel: names, ranges, errors and the calls evaluate uses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC
from music_attr_vae.serving import client


@pytest.fixture(scope="module")
def served(quick_workdir) -> client.ServedModel:
    path = quick_workdir / "saved_model"
    assert (path / "saved_model.pb").is_file(), f"training did not export a SavedModel to {path}"
    return client.ServedModel(str(path))


def test_served_model_client_errors(served, tmp_path):
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        client.ServedModel(str(tmp_path))
    with pytest.raises(ValueError, match="regularises"):
        served.dim_of("loudness")
    name = next(iter(served.maps))
    values = served.traversal_values(name, 5)
    assert values[0] == pytest.approx(served.maps[name]["z_range"][0])
    assert values[-1] == pytest.approx(served.maps[name]["z_range"][1])


def test_reference_measures_encode_and_teacher_forcing(served):
    tokens, values = served.reference_measures()
    assert served.codec == CODEC  # the client rebuilds the exporter's codec from the metadata
    assert tokens.shape[1] == served.codec.ticks_per_measure and len(tokens) == len(values) > 0
    np.testing.assert_allclose(values, attrs.compute_all(tokens), atol=1e-5)  # the stored attributes are the real ones
    z_mean, z_log_var = served.encode_distribution(tokens[:32])
    assert z_mean.shape == z_log_var.shape == (len(tokens[:32]), served.z_dim)
    np.testing.assert_allclose(served.encode(tokens[:32]), z_mean, atol=1e-6)
    assert served.has_function("teacher_forced_nll") and not served.has_function("no_such_function")
    nll, accuracy = served.teacher_forced_nll(tokens[:32])
    assert nll.shape == accuracy.shape == (len(tokens[:32]),)
    assert np.all(nll >= 0) and np.all((accuracy >= 0) & (accuracy <= 1))
    # A measure the decoder reproduces free-running is mostly right under teacher forcing too.
    same = np.all(served.decode(z_mean) == tokens[:32], axis=1)
    if same.any():
        assert accuracy[same].mean() > 0.5


def test_loading_says_nothing_about_the_gradients_left_out(tmp_path, caplog):
    # unrolled GRUs carry a custom gradient, which the export leaves out on purpose (serving takes no
    # gradients); TensorFlow warns once per function on load unless the client filters it
    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.model.vae import build_model
    from music_attr_vae.serving import export

    config = load_config("quick", {"model.unroll": True})
    path = export.export_saved_model(build_model(config), config, str(tmp_path / "saved_model"), jit_compile=False)
    fresh = client.ServedModel(path)
    with caplog.at_level("WARNING"):
        fresh.module
    assert fresh.z_dim == config.model.z_dim
    assert not [r for r in caplog.records if "custom gradients" in r.getMessage()]


ONE_ANSWER_PROGRAM = """
import json, sys
import numpy as np
import tensorflow as tf
from music_attr_vae.serving import client
served = client.ServedModel(sys.argv[1])
if sys.argv[2] == "once":
    client.answer_once(served)
name = next(iter(served.maps))
tokens, _ = served.reference_measures()
z = served.encode(tokens[:3])
small = served.traverse_z(z[:1], name, served.traversal_values(name, 8), temperature=1.0, seed=4)[0]
large = served.decode(np.repeat(z, 5, axis=0), temperature=0.0)  # 15 measures: the XLA program
print(json.dumps({"grappler_off": tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False),
                  "plain_max_rows": int(served.module.plain_max_rows.numpy()),
                  "small": np.asarray(small).tolist(), "large": large.tolist()}))
"""


def test_answer_once_skips_the_graph_optimiser_and_small_xla_programs_and_answers_the_same(quick_workdir):
    out = {}
    for mode in ("default", "once"):
        proc = subprocess.run([sys.executable, "-c", ONE_ANSWER_PROGRAM, str(quick_workdir / "saved_model"), mode],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["default"]["grappler_off"] is False and out["once"]["grappler_off"] is True
    assert out["default"]["plain_max_rows"] == 0 and out["once"]["plain_max_rows"] == 8
    assert out["once"]["small"] == out["default"]["small"]
    assert out["once"]["large"] == out["default"]["large"]
    CODEC.check_tokens(np.array(out["once"]["large"]))
