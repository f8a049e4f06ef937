"""MeasureVAE: the inference API, the objective's parts, and one training step."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.configs_loader import load_config
from music_attr_vae.data.codec import CODEC
from music_attr_vae.model.vae import MeasureVAE, build_model, kl_divergence


@pytest.fixture(scope="module")
def batch(prepared_small):
    from music_attr_vae.data import loader

    arrays = loader.load_arrays(str(prepared_small), "train")
    return arrays["tokens"][:32], arrays["attributes"][:32]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model(load_config("quick"))


def test_inference_api_shapes_and_dtypes(model, batch):
    tokens, _ = batch
    z_mean, z_log_var = model.encode(tokens)  # NumPy int32 in
    assert z_mean.shape == z_log_var.shape == (32, 8) and z_mean.dtype == tf.float32
    decoded = model.decode(z_mean)
    assert decoded.shape == (32, 24) and decoded.dtype == tf.int32
    assert CODEC.check_tokens(decoded.numpy()).shape == (32, 24)
    logits = model.teacher_forced_logits(z_mean, tokens)
    assert logits.shape == (32, 24, CODEC.vocab_size)
    # the same calls work inside a caller's tf.function with tensor temperature and seed (the export path)
    traced = tf.function(lambda z, t, s: model.decode(z, temperature=t, seed=s))
    np.testing.assert_array_equal(traced(z_mean, tf.constant(0.0), tf.constant(1)).numpy(), decoded.numpy())
    sampled = model.decode(z_mean, temperature=1.0, seed=5).numpy()
    np.testing.assert_array_equal(traced(z_mean, tf.constant(1.0), tf.constant(5)).numpy(), sampled)


def test_kl_matches_the_closed_form():
    mean = np.array([[0.5, -1.0]], np.float32)
    log_var = np.array([[0.0, np.log(4.0)]], np.float32)
    # KL(N(m, s^2) || N(0,1)) = 0.5 * (s^2 + m^2 - 1 - log s^2), summed over dims
    expected = 0.5 * (1 + 0.25 - 1 - 0) + 0.5 * (4 + 1 - 1 - np.log(4.0))
    assert float(kl_divergence(mean, log_var)[0]) == pytest.approx(expected, rel=1e-6)


def test_beta_and_gamma_ramps():
    config = load_config("quick", {"train.beta": 0.01, "train.beta_anneal_steps": 100, "train.gamma_ramp_steps": 10})
    vae = build_model(config)
    assert float(vae.beta_at(0)) == 0.0
    assert float(vae.beta_at(50)) == pytest.approx(0.005)
    assert float(vae.beta_at(1000)) == pytest.approx(0.01)
    assert float(vae.gamma_ramp_at(5)) == pytest.approx(0.5)
    fixed = build_model(load_config("quick", {"train.beta": 0.01}))
    assert float(fixed.gamma_ramp_at(0)) == 1.0
    delayed = build_model(load_config("quick", {"train.gamma_ramp_start_steps": 20, "train.gamma_ramp_steps": 10}))
    assert [float(delayed.gamma_ramp_at(s)) for s in (0, 19, 20, 25, 30, 99)] == pytest.approx([0, 0, 0, 0.5, 1, 1])
    switched = build_model(load_config("quick", {"train.gamma_ramp_start_steps": 20}))
    assert [float(switched.gamma_ramp_at(s)) for s in (0, 19, 20, 21)] == [0.0, 0.0, 1.0, 1.0]
    assert float(fixed.beta_at(0)) == pytest.approx(0.01)


def test_objective_is_recon_plus_beta_kl_plus_reg(model, batch):
    tokens, attributes = batch
    z_mean, z_log_var = model.encode(tokens)
    loss, recon, kl, beta, accuracy = model._objective(
        tf.constant(tokens), tf.constant(attributes), z_mean, z_log_var, z_mean, 0, False
    )
    logits = model.teacher_forced_logits(z_mean, tokens).numpy()
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    manual_recon = -np.take_along_axis(log_probs, tokens[..., None], -1).mean()
    assert float(recon) == pytest.approx(manual_recon, rel=1e-4)
    reg, _ = model.attribute_reg(z_mean, tf.constant(attributes))
    assert float(loss) == pytest.approx(float(recon) + float(beta) * float(kl) + float(reg), rel=1e-5)
    assert float(accuracy) == pytest.approx((np.argmax(logits, -1) == tokens).mean())


def test_a_few_training_steps_lower_the_loss_and_report_every_metric(batch):
    keras.utils.set_random_seed(0)
    vae = build_model(load_config("quick"))
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    tokens, attributes = batch
    one_batch = tf.data.Dataset.from_tensors((tokens, attributes))
    before = vae.evaluate(one_batch, verbose=0, return_dict=True)
    history = vae.fit(one_batch.repeat(30), epochs=1, verbose=0, shuffle=False).history
    assert set(history) >= {
        "loss", "recon_loss", "kl", "accuracy", "beta", "learning_rate", "reg_rhythmic_complexity", "reg_pitch_range"
    }
    after = vae.evaluate(one_batch, verbose=0, return_dict=True)
    assert set(after) >= {"loss", "recon_loss", "kl", "accuracy", "free_accuracy", "reg_pitch_range"}
    assert after["loss"] < before["loss"] and after["recon_loss"] < before["recon_loss"]
    assert isinstance(vae, MeasureVAE)


def test_inference_uses_its_own_product_dtype(batch):
    from music_attr_vae.model.gru import products_in

    tokens, _ = batch
    vae = build_model(load_config("quick", {"model.matmul_dtype": "bfloat16"}))  # inference stays float32
    served = vae.encode(tokens)[0].numpy()
    trained = vae.encoder(tf.constant(tokens))[0].numpy()  # bfloat16 products, as in train_step
    with products_in("float32"):
        exact = vae.encoder(tf.constant(tokens))[0].numpy()
    np.testing.assert_allclose(served, exact, atol=1e-6)
    assert np.abs(trained - exact).max() > 1e-5  # bfloat16 rounding is visible...
    np.testing.assert_allclose(trained, exact, atol=0.05)  # ...and small


def test_consistency_term_trains_the_decoder_only(batch):
    tokens, attributes = batch
    consistent = {"regularization": {"pitch_range": {"consistency": 2.0}, "rhythmic_complexity": {"consistency": 0.5}}}
    vae = build_model(load_config("quick", consistent))
    z = vae.encode(tokens)[0]
    with tf.GradientTape() as tape:
        value = vae.consistency(z, tf.constant(attributes))
    grads = dict(zip([v.path for v in vae.trainable_variables], tape.gradient(value, vae.trainable_variables)))
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for p, g in grads.items() if "decoder" in p)
    assert all(g is None for p, g in grads.items() if "encoder" in p)
    # by hand: attribute k's dim takes the value of the row k+1 above; compare with that row's attribute
    from music_attr_vae.data.attributes import attribute_index
    from music_attr_vae.model.soft_attributes import soft_attribute

    mixed = z.numpy().copy()
    mixed[:, 0] = np.roll(mixed[:, 0], 1)  # rhythmic_complexity first (mapping order)
    mixed[:, 2] = np.roll(mixed[:, 2], 2)
    probs, _ = vae.decoder.soft_free_running(tf.constant(mixed))
    want = 0.5 * np.abs(soft_attribute(probs, "rhythmic_complexity").numpy()
                        - np.roll(attributes[:, attribute_index("rhythmic_complexity")], 1)).mean()
    want += 2.0 * np.abs(soft_attribute(probs, "pitch_range").numpy()
                         - np.roll(attributes[:, attribute_index("pitch_range")], 2)).mean()
    assert float(value) == pytest.approx(want, rel=1e-4)
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = vae.fit(tf.data.Dataset.from_tensors((tokens, attributes)).repeat(3), epochs=1, verbose=0).history
    assert np.isfinite(history["consistency"][-1]) and history["consistency"][-1] > 0
    # contour has a differentiable stand-in too (model/soft_attributes.py): its term trains the decoder
    contour_config = load_config("quick")
    contour_config.regularization = {"contour": {"dim": 3, "consistency": 1.0}}
    contour_vae = build_model(contour_config)
    assert [name for name, _ in contour_vae.consistency_specs] == ["contour"]
    with tf.GradientTape() as tape:
        contour_value = contour_vae.consistency(z, tf.constant(attributes))
    assert np.isfinite(float(contour_value)) and float(contour_value) > 0
    decoder_grads = tape.gradient(contour_value, contour_vae.decoder.trainable_variables)
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in decoder_grads)


def test_monotone_term_penalises_a_falling_traversal_step_on_the_decoder_only(batch):
    from music_attr_vae.model.soft_attributes import soft_attribute

    tokens, attributes = batch
    both = {"regularization": {"pitch_range": {"consistency": 2.0, "monotone": 5.0}}}
    keras.utils.set_random_seed(3)
    vae = build_model(load_config("quick", both))
    z = vae.encode(tokens)[0]
    step = tf.constant(11, tf.int64)
    with tf.GradientTape() as tape:
        value = vae.consistency(z, tf.constant(attributes), step=step)
    grads = dict(zip([v.path for v in vae.trainable_variables], tape.gradient(value, vae.trainable_variables)))
    assert any(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for p, g in grads.items() if "decoder" in p)
    assert all(g is None for p, g in grads.items() if "encoder" in p)
    # by hand: dim 2 at v and v + std/2, v uniform over the batch's mean - 3 std .. mean + 2.5 std
    from music_attr_vae.data.attributes import attribute_index

    zn = z.numpy()
    dim = vae.attribute_reg.mapping["pitch_range"]["dim"]
    mean, std = zn[:, dim].mean(), zn[:, dim].std()
    u = tf.random.stateless_uniform([len(zn)], seed=vae._step_seed(step, 4) + tf.constant([0, 7919])).numpy()
    low = mean - 3.0 * std + u * 5.5 * std
    assert low.min() >= mean - 3.0 * std - 1e-6 and low.max() + 0.5 * std <= mean + 3.0 * std + 1e-6
    stepped = []
    for value_at in (low, low + 0.5 * std):
        rows = zn.copy()
        rows[:, dim] = value_at
        probs, _ = vae.decoder.soft_free_running(tf.constant(rows))
        stepped.append(soft_attribute(probs, "pitch_range").numpy())
    falls = np.maximum(stepped[0] - stepped[1], 0.0)
    mixed = zn.copy()
    mixed[:, dim] = np.roll(mixed[:, dim], 1)
    probs, _ = vae.decoder.soft_free_running(tf.constant(mixed))
    consistency = np.abs(soft_attribute(probs, "pitch_range").numpy() - np.roll(attributes[:, attribute_index("pitch_range")], 1)).mean()
    assert float(value) == pytest.approx(2.0 * consistency + 5.0 * falls.mean(), rel=1e-4, abs=1e-7)
    # the monotone term alone is what is left
    only = build_model(load_config("quick", {"regularization": {"pitch_range": {"monotone": 5.0}}}))
    only.set_weights(vae.get_weights())
    assert [name for name, _ in only.consistency_specs] == ["pitch_range"]
    alone = float(only.consistency(z, tf.constant(attributes), step=step))
    assert alone == pytest.approx(5.0 * falls.mean(), rel=1e-4, abs=1e-7)
    assert alone >= 0.0 and falls.max() > 0  # the untrained decoder falls somewhere, so the term is live
    # and a training step runs with it
    only.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = only.fit(tf.data.Dataset.from_tensors((tokens, attributes)).repeat(2), epochs=1, verbose=0).history
    assert np.isfinite(history["consistency"][-1])


def test_a_packed_batch_unpacks_to_the_same_tokens_and_attributes(model):
    from music_attr_vae import run_data

    tokens = np.random.default_rng(0).integers(0, CODEC.vocab_size, (6, CODEC.ticks_per_measure)).astype(np.int32)
    values = np.random.default_rng(1).random((6, 4)).astype(np.float32)
    for batch in ((tokens, values), run_data.pack(tokens, values)):  # the pair, and the multi-worker packing
        got_tokens, got_values = model.unpack(batch)
        assert got_tokens.dtype == tf.int32 and got_values.dtype == tf.float32
        np.testing.assert_array_equal(got_tokens.numpy(), tokens)
        np.testing.assert_array_equal(got_values.numpy(), values)
    assert all(layer.built for layer in model._flatten_layers())  # so Keras' fit never traces the model to build it
