"""The bidirectional-GRU encoder: sized by the codec, reads the whole measure, dropout only in training."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from music_attr_vae.data.codec import CODEC, MeasureCodec
from music_attr_vae.model.encoder import Encoder


def _encoder(codec=CODEC, dropout=0.0):
    encoder = Encoder(8, 6, 12, num_layers=2, dropout=dropout, codec=codec)
    encoder.build()
    return encoder


def _measures(n, seed=0, codec=CODEC):
    rng = np.random.default_rng(seed)
    return rng.integers(0, codec.vocab_size, size=(n, codec.ticks_per_measure)).astype(np.int32)


def test_shapes_and_sizes_come_from_the_codec():
    encoder = _encoder()
    mean, log_var = encoder(_measures(5))
    assert mean.shape == log_var.shape == (5, 8)
    assert encoder.embedding.input_dim == CODEC.vocab_size == 32
    wide = MeasureCodec(40, 100)  # a wider pitch range: a larger vocabulary, the same 24 ticks
    assert _encoder(wide).embedding.input_dim == wide.vocab_size == 63


def test_both_directions_read_the_measure():
    encoder = _encoder()
    base = _measures(1)
    reference, _ = encoder(base)
    for tick in (0, CODEC.ticks_per_measure - 1):  # the first and the last token both change z
        changed = base.copy()
        changed[0, tick] = (changed[0, tick] + 1) % CODEC.vocab_size
        moved, _ = encoder(changed)
        assert np.abs(moved.numpy() - reference.numpy()).max() > 1e-5, tick


def test_dropout_acts_only_in_training_and_follows_the_seed():
    encoder = _encoder(dropout=0.5)
    tokens = _measures(4)
    inference = [encoder(tokens)[0].numpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    np.testing.assert_array_equal(encoder(tokens, training=True)[0].numpy(), inference[0])  # no seed: no dropout
    seed_a, seed_b = tf.constant([1, 2]), tf.constant([3, 4])
    a1 = encoder(tokens, training=True, seed=seed_a)[0].numpy()
    a2 = encoder(tokens, training=True, seed=seed_a)[0].numpy()
    b = encoder(tokens, training=True, seed=seed_b)[0].numpy()
    np.testing.assert_array_equal(a1, a2)
    assert np.abs(a1 - b).max() > 1e-4 and np.abs(a1 - inference[0]).max() > 1e-4
