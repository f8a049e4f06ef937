"""The SavedModel export: every signature, its metadata and its errors, seen by a client with no package.

The signatures are called in a subprocess (savedmodel_client.py) that imports
only TensorFlow and NumPy; this module checks what it returned against the
package's own NumPy code.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC

CLIENT = pathlib.Path(__file__).with_name("savedmodel_client.py")


@pytest.fixture(scope="module")
def saved_model_dir(quick_workdir) -> pathlib.Path:
    path = quick_workdir / "saved_model"
    assert (path / "saved_model.pb").is_file(), f"training did not export a SavedModel to {path}"
    return path


@pytest.fixture(scope="module")
def client(saved_model_dir, tmp_path_factory) -> dict:
    """Everything the package-free client got back from the SavedModel."""
    cwd = tmp_path_factory.mktemp("client")  # not the checkout: the package cannot be imported
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(CLIENT), str(saved_model_dir)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_client_never_imported_the_package(client):
    assert client["package_imported"] is False


def test_metadata_describes_the_model(client, quick_workdir):
    meta = client["metadata"]
    config = json.loads((quick_workdir / "config.json").read_text())
    assert meta["vocabulary"] == CODEC.to_json()
    assert meta["attribute_names"] == list(attrs.ATTRIBUTE_NAMES)
    assert meta["z_dim"] == config["model"]["z_dim"]
    assert meta["regularized"] == {n: r["dim"] for n, r in config["regularization"].items()}
    assert meta["config"]["model"] == config["model"]
    assert meta["package_version"]
    assert set(client["signature_names"]) == set(meta["signatures"]) >= {
        "encode", "decode", "sample", "traverse", "traverse_z", "set_attribute", "metadata"}
    for name, fitted in meta["attribute_maps"].items():
        value, z = np.array(fitted["value"]), np.array(fitted["z"])
        assert fitted["dim"] == meta["regularized"][name]
        assert np.all(np.diff(value) > 0)  # strictly increasing attribute grid
        assert np.all(np.diff(z) * fitted["direction"] >= -1e-6)  # monotone in the fitted direction
        assert value[0] == pytest.approx(fitted["value_range"][0]) and value[-1] == pytest.approx(
            fitted["value_range"][1])
        assert fitted["z_range"] == pytest.approx([z[0], z[-1]])


def test_reference_measures_and_attributes(client):
    tokens = np.array(client["reference_tokens"])
    assert tokens.ndim == 2 and tokens.shape[1] == 24 and len(tokens) > 10
    CODEC.check_tokens(tokens)
    np.testing.assert_allclose(client["reference_attributes"], attrs.compute_all(tokens), atol=1e-6)
    np.testing.assert_allclose(client["attributes"], attrs.compute_all(np.array(client["tokens"])), atol=1e-6)


def test_encode(client):
    z_mean, z_log_var = np.array(client["z_mean"]), np.array(client["z_log_var"])
    assert z_mean.shape == z_log_var.shape == (len(client["tokens"]), client["metadata"]["z_dim"])
    assert np.isfinite(z_mean).all() and np.isfinite(z_log_var).all()
    assert client["encode_again_equal"] and client["signature_encode_equal"]


def test_decode_greedy_and_sampled(client):
    greedy = np.array(client["greedy_seed1"])
    CODEC.check_tokens(greedy)
    assert greedy.shape == np.array(client["tokens"]).shape
    np.testing.assert_array_equal(greedy, client["greedy_seed2"])  # the seed does not matter when greedy
    np.testing.assert_array_equal(greedy, client["signature_decode"])
    np.testing.assert_array_equal(client["hot_seed1"], client["hot_seed1_again"])  # reproducible
    assert not np.array_equal(client["hot_seed1"], client["hot_seed2"])  # and seed-dependent
    CODEC.check_tokens(client["hot_seed1"])


def test_sample_from_the_prior(client):
    z = np.array(client["sample_z"])
    assert z.shape == (5, client["metadata"]["z_dim"]) and client["sample_repeatable"]
    assert not np.allclose(z, client["sample_other_seed_z"])
    np.testing.assert_array_equal(client["sample_tokens"], client["sample_decoded"])
    assert client["sample_empty_shape"] == [0, 24]


def test_sample_draws_regularised_dims_from_their_data_marginal(client):
    z = np.array(client["sample_many_z"])
    maps = client["metadata"]["attribute_maps"]
    assert maps, "the quick model regularises two dims"
    for name, fitted in maps.items():
        stored = np.array(fitted["quantiles"])
        assert len(stored) == len(fitted["z"]) and np.all(np.diff(stored) >= 0)
        drawn = z[:, fitted["dim"]]
        assert stored[0] - 1e-5 <= drawn.min() and drawn.max() <= stored[-1] + 1e-5, name
        levels = np.linspace(0, 1, len(stored))
        for q in (0.1, 0.5, 0.9):
            assert abs(np.quantile(drawn, q) - np.interp(q, levels, stored)) < 0.05 * np.ptp(stored) + 1e-6, (name, q)
    free = np.delete(z, [m["dim"] for m in maps.values()], axis=1)
    assert abs(free.mean()) < 0.05 and abs(free.std() - 1.0) < 0.05  # the prior elsewhere


def test_traverse_sets_the_dim_and_decodes(client):
    meta = client["metadata"]
    dim = meta["attribute_maps"][client["set_attribute_name"]]["dim"]
    values = np.array(client["traverse_values"], np.float32)
    z = np.array(client["traverse_z"])
    tokens = np.array(client["traverse_tokens"])
    assert tokens.shape == (3, len(values), 24)
    np.testing.assert_allclose(z[:, :, dim], np.broadcast_to(values, (3, len(values))), atol=1e-6)
    others = np.delete(np.arange(meta["z_dim"]), dim)
    z_mean = np.array(client["z_mean"])[:3]
    np.testing.assert_allclose(z[:, :, others], np.repeat(z_mean[:, None, others], len(values), 1), atol=1e-5)
    np.testing.assert_array_equal(tokens.reshape(-1, 24), client["traverse_decoded"])
    np.testing.assert_array_equal(tokens, client["traverse_z_tokens"])
    by_number = np.array(client["traverse_dim_z"])
    np.testing.assert_allclose(by_number[:, :, client["traverse_dim"]], [[-1.0, 0.5]] * 2)


def test_set_attribute_uses_the_fitted_map(client):
    meta = client["metadata"]
    name = client["set_attribute_name"]
    fitted = meta["attribute_maps"][name]
    column = attrs.attribute_index(name)
    out = {k: np.array(v) for k, v in client["set"].items()}
    tokens = np.array(client["tokens"])
    expected_target = np.clip(client["set_targets"], *fitted["value_range"])
    np.testing.assert_allclose(out["predicted"], expected_target, atol=1e-6)
    np.testing.assert_allclose(
        out["z"][:, fitted["dim"]], np.interp(expected_target, fitted["value"], fitted["z"]), atol=1e-4)
    others = np.delete(np.arange(meta["z_dim"]), fitted["dim"])
    np.testing.assert_allclose(out["z"][:, others], np.array(client["z_mean"])[:, others], atol=1e-5)
    np.testing.assert_array_equal(out["tokens"], client["set_decoded"])
    np.testing.assert_allclose(out["attribute_before"], attrs.compute_all(tokens)[:, column], atol=1e-6)
    np.testing.assert_allclose(out["attribute_after"], attrs.compute_all(out["tokens"])[:, column], atol=1e-6)
    scalar = np.clip(0.5, *fitted["value_range"])
    np.testing.assert_allclose(client["set_scalar_predicted"], [scalar] * len(tokens), atol=1e-6)


def test_teacher_forced_nll(client):
    nll, acc = np.array(client["nll"]), np.array(client["accuracy"])
    assert nll.shape == acc.shape == (len(client["tokens"]),)
    assert (nll > 0).all() and ((acc >= 0) & (acc <= 1)).all()
    assert nll.mean() < np.mean(client["nll_noise"])  # real measures are likelier than noise


@pytest.mark.parametrize(
    "case, words",
    [
        ("token_too_big", ["tokens must lie in 0..31", "REST", "HOLD"]),
        ("token_negative", ["tokens must lie in 0..31"]),
        ("token_too_big_signature", ["tokens must lie in 0..31"]),
        ("wrong_length", ["(None, 24)"]),
        ("wrong_rank", ["(None, 24)"]),
        ("wrong_z_size", ["(None, {z_dim})"]),
        ("wrong_dtype_signature", ["int32"]),
        ("nan_z_decode", ["z must be finite"]),
        ("nan_z_traverse", ["z must be finite"]),
        ("nan_values", ["values must be finite"]),
        ("nan_target", ["target must be finite"]),
        ("unknown_attribute", ["unknown attribute", "{first} (dim", "loudness"]),
        ("dim_out_of_range", ["unknown attribute", "0..{last_dim}"]),
        ("set_unknown_attribute", ["regularised attribute", "{first} (dim", "loudness"]),
        ("set_wrong_target_count", ["one value per measure"]),
        ("negative_temperature", ["temperature must be >= 0"]),
        ("negative_n", ["n must be >= 0"]),
    ],
)
def test_bad_inputs_fail_clearly(client, case, words):
    meta = client["metadata"]
    error = client["errors"][case]
    assert error is not None, f"{case}: the call did not fail"
    fill = dict(z_dim=meta["z_dim"], last_dim=meta["z_dim"] - 1, first=next(iter(meta["attribute_maps"])))
    for word in words:
        assert word.format(**fill) in error[1], f"{case}: {word!r} not in {error}"



def test_every_function_is_stored_once(saved_model_dir):
    """Each signature is also the module attribute of the same name, and the library holds one copy of each."""
    import re

    from tensorflow.core.protobuf import saved_model_pb2

    from music_attr_vae.serving.signatures import SIGNATURE_NAMES

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    names = [f.signature.name for f in proto.meta_graphs[0].graph_def.library.function]
    # one thin __inference_signature_wrapper per signature is TensorFlow's own; everything else is ours
    traced = [re.sub(r"_\d+$", "", name) for name in names
              if name.startswith("__inference_") and not name.startswith("__inference_signature_wrapper")]
    copies = {name: traced.count(name) for name in set(traced)}
    assert copies["__inference_decode_core"] == 1 and copies["__inference_model_encode"] == 1
    assert max(copies.values()) == 1, sorted(n for n, c in copies.items() if c > 1)
    assert set(proto.meta_graphs[0].signature_def) >= set(SIGNATURE_NAMES)


SMALL_AND_LARGE_PROGRAM = """
import json, os, sys
import numpy as np
import tensorflow as tf
cache = sys.argv[2]
def entries():
    return len(os.listdir(cache))
m = tf.saved_model.load(sys.argv[1])
z_dim = json.loads(m.metadata()["json"].numpy())["z_dim"]
z = tf.constant(np.random.default_rng(3).standard_normal((12, z_dim)).astype(np.float32))
def decode(rows, t):
    return m.decode(z[:rows], tf.constant(t), tf.constant(5, tf.int32))["tokens"].numpy().tolist()
out = {"exported_plain_max_rows": int(m.plain_max_rows.numpy())}
m.plain_max_rows.assign(8)
for name, t in (("greedy", 0.0), ("sampled", 1.0)):
    out[name + "_small"], out[name + "_one"] = decode(8, t), decode(1, t)
out["entries_after_small"] = entries()
for name, t in (("greedy", 0.0), ("sampled", 1.0)):
    out[name + "_large"] = decode(12, t)
out["entries_after_large"] = entries()
m.plain_max_rows.assign(0)
out["greedy_small_xla"] = decode(8, 0.0)
out["entries_after_small_xla"] = entries()
print(json.dumps(out))
"""


def test_small_requests_skip_xla_when_the_client_asks_and_decode_what_xla_decodes(saved_model_dir, tmp_path):
    """With plain_max_rows set (as answer_once does), at most that many measures run the plain graph: no XLA
    program is built (the persistent cache stays empty), and the measures are the ones the XLA-compiled
    decoder gives for the same rows.  As exported (0) every request runs XLA."""
    cache = tmp_path / "xla"
    cache.mkdir()
    env = dict(os.environ, TF_XLA_FLAGS=f"--tf_xla_persistent_cache_directory={cache}")
    proc = subprocess.run([sys.executable, "-c", SMALL_AND_LARGE_PROGRAM, str(saved_model_dir), str(cache)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["exported_plain_max_rows"] == 0
    assert out["entries_after_small"] == 0  # nothing was compiled for 8 measures or fewer
    assert out["entries_after_large"] >= 1  # 12 measures ran an XLA program
    assert out["entries_after_small_xla"] > out["entries_after_large"]  # 8 measures, XLA again: another bucket
    for name in ("greedy", "sampled"):
        large = np.array(out[name + "_large"])
        np.testing.assert_array_equal(np.array(out[name + "_small"]), large[:8])
        np.testing.assert_array_equal(np.array(out[name + "_one"]), large[:1])
    np.testing.assert_array_equal(np.array(out["greedy_small_xla"]), np.array(out["greedy_small"]))
    assert not np.array_equal(np.array(out["greedy_large"]), np.array(out["sampled_large"]))
