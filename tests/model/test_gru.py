"""The GRU recurrence: its forward pass is ``GRU.step`` repeated, and its hand-written backward pass
gives the gradients automatic differentiation of that loop gives."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.model import gru as gru_lib


def _reference(layer, x_proj, h0, reverse):
    """The recurrence as a plain loop of ``layer.step`` (differentiated automatically)."""
    steps = list(tf.unstack(x_proj, axis=1))
    order = range(len(steps) - 1, -1, -1) if reverse else range(len(steps))
    h, outputs = h0, [None] * len(steps)
    for t in order:
        h = outputs[t] = layer.step(steps[t], h)
    return tf.stack(outputs, axis=1), h


def _setup(batch=5, steps=7, units=6, in_dim=4, seed=0):
    layer = gru_lib.GRU(units)
    layer.build((None, steps, in_dim))
    rng = np.random.default_rng(seed)
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32))  # non-zero recurrent bias too
    x = tf.constant(rng.normal(size=(batch, steps, in_dim)).astype(np.float32))
    h0 = tf.constant(rng.normal(size=(batch, units)).astype(np.float32) * 0.5)
    # weights of the two outputs in the loss: every output step and the last state matter
    w_seq = tf.constant(rng.normal(size=(batch, steps, units)).astype(np.float32))
    w_last = tf.constant(rng.normal(size=(batch, units)).astype(np.float32))
    return layer, x, h0, w_seq, w_last


def _loss_and_grads(layer, x, h0, w_seq, w_last, fn, use_seq=True, use_last=True):
    with tf.GradientTape() as tape:
        tape.watch([x, h0])
        outputs, last = fn(layer.project(x), h0)
        loss = tf.constant(0.0)
        if use_seq:
            loss += tf.reduce_sum(outputs * w_seq)
        if use_last:
            loss += tf.reduce_sum(tf.sin(last) * w_last)
    sources = [x, h0, layer.kernel, layer.recurrent_kernel, layer.bias]
    return outputs, last, tape.gradient(loss, sources)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("use_seq,use_last", [(True, True), (True, False), (False, True)])
def test_gradients_match_automatic_differentiation(reverse, use_seq, use_last):
    layer, x, h0, w_seq, w_last = _setup()
    ours = _loss_and_grads(layer, x, h0, w_seq, w_last, lambda p, h: layer.run(p, h, reverse=reverse),
                           use_seq, use_last)
    ref = _loss_and_grads(layer, x, h0, w_seq, w_last, lambda p, h: _reference(layer, p, h, reverse),
                          use_seq, use_last)
    # the forward pass is the same arithmetic: identical outputs
    np.testing.assert_array_equal(ours[0].numpy(), ref[0].numpy())
    np.testing.assert_array_equal(ours[1].numpy(), ref[1].numpy())
    names = ["x", "h0", "kernel", "recurrent_kernel", "bias"]
    for name, g, r in zip(names, ours[2], ref[2]):
        assert g is not None, name
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
        assert np.abs(r.numpy()).max() > 1e-3, name  # a gradient that is really there


def test_reverse_reads_the_sequence_backwards():
    layer, x, h0, _, _ = _setup()
    proj = layer.project(x)
    outputs, last = layer.run(proj, h0, reverse=True)
    flipped, flipped_last = layer.run(tf.reverse(proj, axis=[1]), h0)
    np.testing.assert_allclose(outputs.numpy(), tf.reverse(flipped, axis=[1]).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(last.numpy(), flipped_last.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(last.numpy(), outputs[:, 0].numpy(), rtol=0, atol=0)


def test_chains_and_scan_agree_with_the_unrolled_recurrence():
    layer, x, h0, w_seq, w_last = _setup(batch=7)
    base = _loss_and_grads(layer, x, h0, w_seq, w_last, lambda p, h: layer.run(p, h, reverse=True))
    for chains, unroll in ((3, True), (1, False)):
        other = gru_lib.GRU(layer.units, chains=chains, unroll=unroll)
        other.build((None, x.shape[1], x.shape[2]))
        other.set_weights(layer.get_weights())
        got = _loss_and_grads(other, x, h0, w_seq, w_last, lambda p, h: other.run(p, h, reverse=True))
        np.testing.assert_allclose(got[0].numpy(), base[0].numpy(), rtol=1e-5, atol=1e-6)
        for g, r in zip(got[2], base[2]):
            np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-5)


def test_bfloat16_products_differentiate_to_float32_weights():
    layer, x, h0, w_seq, w_last = _setup()
    ref = _loss_and_grads(layer, x, h0, w_seq, w_last, lambda p, h: layer.run(p, h))
    with gru_lib.products_in("bfloat16"):
        got = _loss_and_grads(layer, x, h0, w_seq, w_last, lambda p, h: layer.run(p, h))
    for g, r in zip(got[2], ref[2]):
        assert g.dtype == tf.float32
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=0.1, atol=0.05)


def test_inside_a_traced_function():
    layer, x, h0, w_seq, w_last = _setup()
    eager = _loss_and_grads(layer, x, h0, w_seq, w_last, lambda p, h: layer.run(p, h))

    @tf.function(autograph=False)
    def traced():
        return _loss_and_grads(layer, x, h0, w_seq, w_last, lambda p, h: layer.run(p, h))[2]

    for g, r in zip(traced(), eager[2]):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-6, atol=1e-7)
