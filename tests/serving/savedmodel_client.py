"""Exercise every signature of an exported SavedModel using TensorFlow and NumPy only.

Run as ``python savedmodel_client.py SAVED_MODEL_DIR``; importing
``music_attr_vae`` is blocked here (even when it is installed), so this is what
a client with no training code sees.  Prints one JSON document with what every
call returned (and the errors of the bad calls) for test_export.py to check.
"""

from __future__ import annotations

import importlib.abc
import json
import sys


class _NoPackage(importlib.abc.MetaPathFinder):
    """Make ``import music_attr_vae`` fail here even when it is pip-installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "music_attr_vae" or name.startswith("music_attr_vae."):
            raise ImportError(f"{name} must not be needed to use the SavedModel")
        return None


sys.meta_path.insert(0, _NoPackage())

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _np(x):
    return x.numpy().tolist()


def _error(fn):
    """[exception type, message] of a call that should fail, or None when it did not."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the type is part of the report
        return [type(e).__name__, str(e)]
    return None


def run(path: str) -> dict:
    m = tf.saved_model.load(path)
    meta = json.loads(m.metadata()["json"].numpy().decode("utf-8"))
    out = {"metadata": meta, "signature_names": sorted(m.signatures.keys())}
    z_dim = meta["z_dim"]
    names = list(meta["attribute_maps"])
    attribute = names[0]

    ref = m.reference_measures()
    tokens = ref["tokens"].numpy()[:12]
    out["reference_tokens"] = _np(ref["tokens"])
    out["reference_attributes"] = _np(ref["attributes"])
    out["tokens"] = tokens.tolist()

    enc = m.encode(tokens=tokens)
    out["z_mean"] = _np(enc["z_mean"])
    out["z_log_var"] = _np(enc["z_log_var"])
    out["encode_again_equal"] = bool(np.array_equal(enc["z_mean"].numpy(), m.encode(tokens=tokens)["z_mean"].numpy()))
    sig = m.signatures["encode"](tokens=tf.constant(tokens))
    out["signature_encode_equal"] = bool(np.allclose(sig["z_mean"].numpy(), enc["z_mean"].numpy(), atol=1e-6))

    z = enc["z_mean"]
    out["greedy_seed1"] = _np(m.decode(z=z, temperature=0.0, seed=1)["tokens"])
    out["greedy_seed2"] = _np(m.decode(z=z, temperature=0.0, seed=2)["tokens"])
    out["hot_seed1"] = _np(m.decode(z=z, temperature=1.5, seed=1)["tokens"])
    out["hot_seed1_again"] = _np(m.decode(z=z, temperature=1.5, seed=1)["tokens"])
    out["hot_seed2"] = _np(m.decode(z=z, temperature=1.5, seed=2)["tokens"])
    sig = m.signatures["decode"](z=z, temperature=tf.constant(0.0), seed=tf.constant(1))
    out["signature_decode"] = _np(sig["tokens"])

    s1 = m.sample(n=5, seed=3, temperature=0.0)
    s2 = m.sample(n=5, seed=3, temperature=0.0)
    out["sample_tokens"] = _np(s1["tokens"])
    out["sample_z"] = _np(s1["z"])
    out["sample_repeatable"] = bool(np.array_equal(s1["tokens"].numpy(), s2["tokens"].numpy()))
    out["sample_other_seed_z"] = _np(m.sample(n=5, seed=4, temperature=0.0)["z"])
    out["sample_many_z"] = _np(m.sample(n=2000, seed=5, temperature=0.0)["z"])
    out["sample_empty_shape"] = list(m.sample(n=0, seed=3, temperature=0.0)["tokens"].shape)
    out["sample_decoded"] = _np(m.decode(z=s1["z"], temperature=0.0, seed=0)["tokens"])

    values = np.linspace(*meta["attribute_maps"][attribute]["z_range"], 6).astype(np.float32)
    out["traverse_values"] = values.tolist()
    tr = m.traverse(tokens=tokens[:3], attribute=attribute, values=values, temperature=0.0, seed=0)
    out["traverse_tokens"] = _np(tr["tokens"])
    out["traverse_z"] = _np(tr["z"])
    trz = m.traverse_z(z=z[:3], attribute=attribute, values=values, temperature=0.0, seed=0)
    out["traverse_z_tokens"] = _np(trz["tokens"])
    out["traverse_decoded"] = _np(m.decode(z=tf.reshape(tr["z"], [-1, z_dim]), temperature=0.0, seed=0)["tokens"])
    other_dim = (meta["attribute_maps"][attribute]["dim"] + 1) % z_dim
    out["traverse_dim"] = other_dim
    out["traverse_dim_z"] = _np(
        m.traverse(tokens=tokens[:2], attribute=str(other_dim), values=[-1.0, 0.5], temperature=0.0, seed=0)["z"]
    )

    targets = np.linspace(-0.5, 1.5, len(tokens)).astype(np.float32)  # some outside the fitted range
    sa = m.set_attribute(tokens=tokens, attribute=attribute, target=targets, temperature=0.0, seed=0)
    out["set_targets"] = targets.tolist()
    out["set"] = {k: _np(v) for k, v in sa.items()}
    out["set_decoded"] = _np(m.decode(z=sa["z"], temperature=0.0, seed=0)["tokens"])
    scalar = m.set_attribute(tokens=tokens, attribute=attribute, target=0.5, temperature=0.0, seed=0)
    out["set_scalar_predicted"] = _np(scalar["predicted"])
    out["set_attribute_name"] = attribute

    out["attributes"] = _np(m.attributes(tokens=tokens)["values"])
    out["set_attributes_of_output"] = _np(m.attributes(tokens=sa["tokens"])["values"])
    nll = m.teacher_forced_nll(tokens=tokens)
    out["nll"] = _np(nll["nll"])
    out["accuracy"] = _np(nll["accuracy"])
    noise = np.random.default_rng(0).integers(0, 32, tokens.shape).astype(np.int32)
    out["nll_noise"] = _np(m.teacher_forced_nll(tokens=noise)["nll"])

    # Bad inputs: each must fail with a message saying what is allowed.
    nan_z = np.full((2, z_dim), np.nan, np.float32)
    out["errors"] = {
        "token_too_big": _error(lambda: m.encode(tokens=np.full((2, 24), 32, np.int32))),
        "token_negative": _error(lambda: m.encode(tokens=np.full((2, 24), -1, np.int32))),
        "token_too_big_signature": _error(lambda: m.signatures["encode"](tokens=tf.fill([1, 24], 40))),
        "wrong_length": _error(lambda: m.encode(tokens=np.zeros((2, 23), np.int32))),
        "wrong_rank": _error(lambda: m.encode(tokens=np.zeros((24,), np.int32))),
        "wrong_z_size": _error(lambda: m.decode(z=np.zeros((2, z_dim + 1), np.float32), temperature=0.0, seed=0)),
        "wrong_dtype_signature": _error(lambda: m.signatures["encode"](tokens=tf.zeros([1, 24], tf.float32))),
        "nan_z_decode": _error(lambda: m.decode(z=nan_z, temperature=0.0, seed=0)),
        "nan_z_traverse": _error(
            lambda: m.traverse_z(z=nan_z, attribute=attribute, values=[0.0], temperature=0.0, seed=0)
        ),
        "nan_values": _error(
            lambda: m.traverse(tokens=tokens[:1], attribute=attribute, values=[np.nan], temperature=0.0, seed=0)
        ),
        "nan_target": _error(
            lambda: m.set_attribute(tokens=tokens[:1], attribute=attribute, target=np.nan, temperature=0.0, seed=0)
        ),
        "unknown_attribute": _error(
            lambda: m.traverse(tokens=tokens[:1], attribute="loudness", values=[0.0], temperature=0.0, seed=0)
        ),
        "dim_out_of_range": _error(
            lambda: m.traverse(tokens=tokens[:1], attribute=str(z_dim), values=[0.0], temperature=0.0, seed=0)
        ),
        "set_unknown_attribute": _error(
            lambda: m.set_attribute(tokens=tokens[:1], attribute="loudness", target=0.5, temperature=0.0, seed=0)
        ),
        "set_wrong_target_count": _error(
            lambda: m.set_attribute(tokens=tokens[:3], attribute=attribute, target=[0.1, 0.2], temperature=0.0, seed=0)
        ),
        "negative_temperature": _error(lambda: m.decode(z=np.zeros((1, z_dim), np.float32), temperature=-1.0, seed=0)),
        "negative_n": _error(lambda: m.sample(n=-1, seed=0, temperature=0.0)),
    }
    out["package_imported"] = "music_attr_vae" in sys.modules
    return out


if __name__ == "__main__":
    json.dump(run(sys.argv[1]), sys.stdout)
