"""The GRU building blocks and the hierarchical decoder: shapes, the previous-token shift, masking, sampling."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.data.codec import CODEC
from music_attr_vae.model.decoder import MASKED_LOGIT, START, HierarchicalDecoder
from music_attr_vae.model.gru import GRU, BiGRU

B, D = 5, 6


@pytest.fixture(scope="module")
def real_tokens(prepared_small):
    from music_attr_vae.data import loader

    return loader.load_arrays(str(prepared_small), "validation")["tokens"][:B]


def _decoder(**kwargs) -> HierarchicalDecoder:
    keras.utils.set_random_seed(3)
    args = dict(z_dim=D, embed_dim=4, hidden=12, num_layers=2)
    args.update(kwargs)
    decoder = HierarchicalDecoder(**args)
    decoder.build()
    return decoder


@pytest.mark.parametrize("chains, unroll", [(1, True), (2, True), (3, False)])
def test_gru_matches_keras_gru(chains, unroll):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 24, 5)).astype(np.float32)
    h0 = rng.normal(size=(7, 9)).astype(np.float32)
    reference = keras.layers.GRU(9, return_sequences=True, reset_after=True)
    reference.build(x.shape)
    reference.cell.bias.assign(rng.normal(size=(2, 27)).astype(np.float32))  # non-zero input and recurrent biases
    ours = GRU(9, chains=chains, unroll=unroll)
    ours.build(x.shape)
    ours.set_weights(reference.get_weights())  # same layout: kernel, recurrent kernel, (input, recurrent) bias
    expected = reference(x, initial_state=[h0]).numpy()
    np.testing.assert_allclose(ours(x, initial_state=h0).numpy(), expected, atol=1e-5)


def test_bigru_matches_keras_bidirectional():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 24, 5)).astype(np.float32)
    for return_sequences in (True, False):
        reference = keras.layers.Bidirectional(keras.layers.GRU(6, return_sequences=return_sequences))
        reference.build(x.shape)
        ours = BiGRU(6, return_sequences=return_sequences)
        ours.build(x.shape)
        ours.forward.set_weights(reference.forward_layer.get_weights())
        ours.backward.set_weights(reference.backward_layer.get_weights())
        np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), atol=1e-5)


def test_shapes_and_dtypes_of_both_modes(real_tokens):
    decoder = _decoder()
    z = tf.random.normal([B, D], seed=1)
    logits = decoder.teacher_forced(z, real_tokens)
    assert logits.shape == (B, CODEC.ticks_per_measure, CODEC.vocab_size) and logits.dtype == tf.float32
    tokens, free_logits = decoder.free_running(z)
    assert tokens.shape == (B, CODEC.ticks_per_measure) and tokens.dtype == tf.int32
    assert free_logits.shape == logits.shape
    assert decoder.token_embedding.input_dim == START + 1  # the START id has its own embedding row


def test_previous_token_shift_runs_over_the_whole_measure(real_tokens):
    """Logits at tick t depend on tokens < t only, across beat boundaries too."""
    decoder = _decoder()
    z = tf.random.normal([B, D], seed=2)
    base = decoder.teacher_forced(z, real_tokens).numpy()
    for t in (0, 5, 6, 17, 23):  # 5 and 17 end a beat: the next beat's tick 0 must see them
        changed = real_tokens.copy()
        changed[:, t] = (changed[:, t] + 7) % 30
        logits = decoder.teacher_forced(z, changed).numpy()
        np.testing.assert_allclose(logits[:, : t + 1], base[:, : t + 1], atol=1e-6)
        if t < 23:
            assert np.abs(logits[:, t + 1] - base[:, t + 1]).max() > 1e-4


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_free_running_is_teacher_forcing_on_its_own_output(layers):
    decoder = _decoder(num_layers=layers)
    z = tf.random.normal([B, D], seed=3)
    for temperature, seed in ((0.0, 0), (1.5, 11)):
        tokens, free_logits = decoder.free_running(z, temperature, seed)
        forced = decoder.teacher_forced(z, tokens)
        np.testing.assert_allclose(forced.numpy(), free_logits.numpy(), atol=1e-4)
        if temperature == 0.0:
            np.testing.assert_array_equal(np.argmax(forced.numpy(), -1), tokens.numpy())


def test_hold_is_masked_on_tick_zero_only(real_tokens):
    decoder = _decoder()
    z = tf.random.normal([64, D], seed=4) * 3.0
    logits = decoder.teacher_forced(z, np.tile(real_tokens, (13, 1))[:64]).numpy()
    assert np.all(logits[:, 0, CODEC.hold] == MASKED_LOGIT)
    assert np.all(logits[:, 1:, CODEC.hold] > MASKED_LOGIT / 2)
    # a hot sampler never starts a measure with HOLD, but does emit HOLD elsewhere
    tokens = decoder.free_running(z, temperature=5.0, seed=7)[0].numpy()
    assert not np.any(tokens[:, 0] == CODEC.hold)
    assert np.any(tokens[:, 1:] == CODEC.hold)
    # without the grammar mask the same sampler does start measures with HOLD
    unmasked = _decoder(mask_hold_at_start=False)
    free = unmasked.free_running(z, temperature=5.0, seed=7)[0].numpy()
    assert np.any(free[:, 0] == CODEC.hold)


def test_sampling_is_reproducible_per_seed():
    decoder = _decoder()
    z = tf.random.normal([32, D], seed=5)
    a = decoder.free_running(z, 1.0, 3)[0].numpy()
    b = decoder.free_running(z, 1.0, 3)[0].numpy()
    c = decoder.free_running(z, 1.0, 4)[0].numpy()
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)
    greedy = decoder.free_running(z, 0.0, 3)[0].numpy()
    np.testing.assert_array_equal(greedy, decoder.free_running(z, 0.0, 99)[0].numpy())


def test_sampler_follows_the_softmax_and_is_the_same_under_xla():
    from music_attr_vae.model.decoder import _choose, counter_uniform, gumbel_noise

    probs = np.array([0.6, 0.25, 0.1, 0.05], np.float32)
    logits = tf.constant(np.tile(np.log(probs), (40000, 1)))
    noise = gumbel_noise([40000, 4], tf.constant(5), [3])[0]
    drawn = _choose(logits, tf.constant(1.0), noise).numpy()
    np.testing.assert_allclose(np.bincount(drawn, minlength=4) / len(drawn), probs, atol=0.01)
    hot = _choose(logits, tf.constant(4.0), noise).numpy()  # a higher temperature flattens it
    assert np.bincount(hot, minlength=4)[3] / len(hot) > 0.15
    np.testing.assert_array_equal(_choose(logits, tf.constant(0.0), noise).numpy(), 0)  # greedy ignores the noise
    eager = counter_uniform(tf.constant([64, 32]), tf.constant(9), [4]).numpy()
    compiled = tf.function(lambda s: counter_uniform(tf.constant([64, 32]), s, [4]), jit_compile=True)(tf.constant(9))
    np.testing.assert_array_equal(eager, compiled.numpy())
    assert eager.shape == (1, 64, 32)
    assert 0.0 < eager.min() and eager.max() < 1.0 and abs(eager.mean() - 0.5) < 0.03
    # a tick's draws depend on (seed, tick) only, not on which other ticks are drawn with it
    several = counter_uniform(tf.constant([64, 32]), tf.constant(9), [0, 4, 7]).numpy()
    np.testing.assert_array_equal(several[1], eager[0])
    assert np.mean(several[0] == several[1]) < 0.01


def test_soft_free_running_is_free_running_in_the_cold_limit():
    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.model.vae import build_model

    keras.utils.set_random_seed(3)
    decoder = build_model(load_config("quick")).decoder
    z = tf.random.normal([16, 8], seed=2) * 2.0
    tokens, logits = decoder.free_running(z)
    probs, soft_logits = decoder.soft_free_running(z, temperature=1e-4)
    np.testing.assert_array_equal(np.argmax(probs.numpy(), -1), tokens.numpy())
    np.testing.assert_allclose(soft_logits.numpy(), logits.numpy(), atol=2e-3)  # summation order only
    warm, _ = decoder.soft_free_running(z)  # temperature 1: tick 0 is softmax(logits) of the hard pass
    np.testing.assert_allclose(warm.numpy()[:, 0], tf.nn.softmax(logits[:, 0]).numpy(), atol=1e-6)
    assert np.allclose(warm.numpy().sum(-1), 1.0, atol=1e-5) and float(tf.reduce_max(warm[:, 0, CODEC.hold])) == 0.0


def test_token_dropout_replaces_previous_tokens_by_start_in_training_only(real_tokens):
    z = tf.random.normal([B, D], seed=2)
    seed = tf.constant([4, 2], tf.int32)
    plain = _decoder()
    dropped = _decoder(token_dropout=0.5)
    # inference (no seed) and training without the option are untouched
    np.testing.assert_allclose(dropped.teacher_forced(z, real_tokens).numpy(),
                               plain.teacher_forced(z, real_tokens).numpy(), atol=1e-6)
    np.testing.assert_allclose(plain.teacher_forced(z, real_tokens, training=True, seed=seed).numpy(),
                               plain.teacher_forced(z, real_tokens).numpy(), atol=1e-6)
    # in training, about half of the inputs are START; the same seed drops the same ones
    a = dropped.teacher_forced(z, real_tokens, training=True, seed=seed).numpy()
    b = dropped.teacher_forced(z, real_tokens, training=True, seed=seed).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - plain.teacher_forced(z, real_tokens).numpy()).max() > 1e-4
    # with every input dropped, the logits no longer depend on the measure's tokens at all
    everything = _decoder(token_dropout=0.999999)
    other = np.roll(real_tokens, 1, axis=0)
    np.testing.assert_allclose(everything.teacher_forced(z, real_tokens, training=True, seed=seed).numpy(),
                               everything.teacher_forced(z, other, training=True, seed=seed).numpy(), atol=1e-6)
    all_start = np.full_like(real_tokens, START)
    np.testing.assert_allclose(
        everything.teacher_forced(z, real_tokens, training=True, seed=seed).numpy()[:, 1:],
        everything.teacher_forced(z, all_start, training=False).numpy()[:, 1:], atol=1e-5)

