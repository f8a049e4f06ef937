"""The attribute-regularization layer: values on a hand-computed batch, metrics, errors, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.data import attributes as attrs
from music_attr_vae.model.regularization import AttributeRegularization, normalize_mapping

# Three measures: latent dim 1 carries the code, rhythmic complexity is column 0.
Z = np.array([[9.0, 0.0, 5.0], [9.0, 0.1, 5.0], [9.0, -0.2, 5.0]], np.float32)
RHYTHM = [0.2, 0.5, 0.5]
ATTRS = np.zeros((3, 4), np.float32)
ATTRS[:, 0] = RHYTHM
ATTRS[:, 1] = [0.9, 0.1, 0.4]  # pitch range, not mapped in most cases


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


def _hand_value(delta: float, loss: str, target: str, scale: float = 1.0, gamma: float = 1.0) -> float:
    """The loss written out pair by pair (9 ordered pairs, diagonal included)."""
    z = [0.0, 0.1, -0.2]
    total = 0.0
    for i in range(3):
        for j in range(3):
            predicted = math.tanh(delta * (z[i] - z[j]))
            diff = RHYTHM[i] - RHYTHM[j]
            wanted = _sign(diff) if target == "sign" else math.tanh(delta * scale * diff)
            err = predicted - wanted
            total += abs(err) if loss == "l1" else err * err
    return gamma * total / 9.0


def test_hand_computed_values_for_each_loss_and_target():
    # One case written with literal numbers: delta=1, mse, sign.
    # pairs (0,1): tanh(-0.1) - (-1) = 0.900332; (0,2): tanh(0.2) - (-1) = 1.197375;
    # (1,2): tanh(0.3) - 0 = 0.291313; the mirrored pairs have the same squares.
    literal = 2 * (0.900332**2 + 1.197375**2 + 0.291313**2) / 9
    assert _hand_value(1.0, "mse", "sign") == pytest.approx(literal, abs=1e-5)
    for delta, loss, target, scale, gamma in [
        (1.0, "mse", "sign", 1.0, 1.0),
        (10.0, "l1", "sign", 1.0, 1.0),
        (10.0, "mse", "sign", 1.0, 2.5),
        (1.0, "l1", "distance", 4.0, 1.0),
        (10.0, "mse", "distance", 2.0, 0.5),
    ]:
        layer = AttributeRegularization(
            {"rhythmic_complexity": {"dim": 1, "gamma": gamma, "delta": delta, "loss": loss, "target": target, "scale": scale}},
            z_dim=3,
        )
        total, terms = layer(tf.constant(Z), tf.constant(ATTRS))
        expected = _hand_value(delta, loss, target, scale, gamma)
        assert float(total) == pytest.approx(expected, rel=1e-5), (delta, loss, target)
        assert float(terms["rhythmic_complexity"]) == pytest.approx(expected, rel=1e-5)


def test_two_attributes_add_up_and_report_one_metric_each():
    mapping = {
        "rhythmic_complexity": {"dim": 1, "delta": 1.0, "loss": "mse"},
        "pitch_range": {"dim": 2, "delta": 1.0, "loss": "mse", "gamma": 3.0},
    }
    layer = AttributeRegularization(mapping, z_dim=3)
    total, terms = layer(tf.constant(Z), tf.constant(ATTRS), weight=0.5)
    # dim 2 is constant (5.0): predicted 0 everywhere, so the pitch-range term is mean(sign^2) = 6/9
    assert float(terms["pitch_range"]) == pytest.approx(3.0 * 6 / 9, rel=1e-6)
    assert float(total) == pytest.approx(0.5 * (float(terms["pitch_range"]) + float(terms["rhythmic_complexity"])))
    names = sorted(m.name for m in layer.metrics)
    assert names == ["reg_pitch_range", "reg_rhythmic_complexity"]
    tracker = {m.name: m for m in layer.metrics}["reg_pitch_range"]
    assert float(tracker.result()) == pytest.approx(float(terms["pitch_range"]))


def test_distance_target_is_zero_exactly_on_a_linear_code():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 64).astype(np.float32)
    z = np.zeros((64, 4), np.float32)
    z[:, 3] = 4.0 * a - 1.7  # z_r = scale * a + c
    attributes = np.zeros((64, 4), np.float32)
    attributes[:, 2] = a  # note density
    layer = AttributeRegularization({"note_density": {"dim": 3, "target": "distance", "scale": 4.0}}, z_dim=4)
    assert float(layer(tf.constant(z), tf.constant(attributes))[0]) < 1e-6
    z[:, 3] = 4.0 * a**2  # monotone but not linear: the distance target still costs
    assert float(layer(tf.constant(z), tf.constant(attributes))[0]) > 1e-3


def test_empty_mapping_is_the_plain_vae():
    layer = AttributeRegularization({}, z_dim=3)
    total, terms = layer(tf.constant(Z), tf.constant(ATTRS))
    assert float(total) == 0.0 and terms == {} and layer.metrics == []


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"groove": {"dim": 0}}, "unknown attribute 'groove'; known attributes: rhythmic_complexity, pitch_range"),
        ({"pitch_range": {"dim": 8}}, r"regularization.pitch_range.dim=8 must be an integer in \[0, z_dim=8\)"),
        ({"pitch_range": {"dim": -1}}, "pitch_range.dim=-1"),
        ({"pitch_range": {}}, "'dim'"),
        ({"pitch_range": {"dim": 0}, "contour": {"dim": 0}}, "already used by 'pitch_range'"),
        ({"pitch_range": {"dim": 0, "loss": "huber"}}, "loss='huber' must be one of"),
        ({"pitch_range": {"dim": 0, "target": "rank"}}, "target='rank' must be one of"),
        ({"pitch_range": {"dim": 0, "gamma": -1.0}}, "gamma=-1.0 must be >= 0"),
        ({"pitch_range": {"dim": 0, "consistency": -1.0}}, r"pitch_range.consistency=-1.0 must be >= 0"),
        ({"contour": {"dim": 1, "monotone": -0.5}}, r"regularization.contour.monotone=-0.5 must be >= 0"),
        ({"pitch_range": {"dim": 0, "delta": 0.0}}, "delta=0.0 must be > 0"),
        ({"pitch_range": {"dim": 0, "weight": 1.0}}, "unknown field"),
    ],
)
def test_bad_mappings_are_refused_with_the_field(mapping, message):
    with pytest.raises(ValueError, match=message):
        normalize_mapping(mapping, z_dim=8)


def test_defaults_are_the_authors_choice():
    spec = normalize_mapping({"contour": {"dim": 3}}, z_dim=4)["contour"]
    assert spec == {"dim": 3, "gamma": 1.0, "delta": 10.0, "loss": "l1", "target": "sign", "scale": 2.0,
                    "consistency": 0.0, "monotone": 0.0}
    assert list(attrs.ATTRIBUTE_NAMES).index("contour") == 3


def test_gradient_of_the_regularization_reaches_only_the_encoder():
    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.model.vae import build_model

    config = load_config("quick")
    model = build_model(config)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 31, size=(16, 24)).astype(np.int32)
    attributes = attrs.compute_all(tokens)
    with tf.GradientTape() as tape:
        z_mean, _ = model.encoder(tf.constant(tokens))
        reg, _ = model.attribute_reg(z_mean, tf.constant(attributes))
    variables = model.encoder.trainable_variables + model.decoder.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(reg, variables)))
    encoder_norms = [float(tf.norm(g)) for p, g in grads.items() if p.startswith(model.encoder.path) and g is not None]
    assert encoder_norms and max(encoder_norms) > 0.0
    # the embedding, every GRU and the z_mean head all get gradient; z_log_var does not
    touched = {p for p, g in grads.items() if g is not None and float(tf.norm(g)) > 0}
    assert any("token_embedding" in p for p in touched)
    assert any("bigru_0" in p for p in touched) and any("z_mean" in p for p in touched)
    assert not any("z_log_var" in p for p in touched)
    assert not any(p.startswith(model.decoder.path) for p in touched)
