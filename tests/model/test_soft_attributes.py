"""Expected attributes of per-tick token distributions: exact on real measures, right in expectation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.data import attributes as attrs
from music_attr_vae.data import loader
from music_attr_vae.data.codec import CODEC
from music_attr_vae.model.soft_attributes import SOFT_ATTRIBUTES, soft_attribute


@pytest.fixture(scope="module")
def corpus_tokens(prepared_small):
    return loader.load_arrays(str(prepared_small), "train")["tokens"][:3000]


@pytest.mark.parametrize("name", SOFT_ATTRIBUTES)
def test_one_hot_distributions_give_the_exact_attribute(corpus_tokens, name):
    soft = soft_attribute(tf.one_hot(corpus_tokens, CODEC.vocab_size), name).numpy()
    np.testing.assert_allclose(soft, attrs.compute(corpus_tokens, name), atol=1e-5)
    assert np.ptp(soft) > 0.1  # the corpus sample spans the attribute


@pytest.mark.parametrize("name", SOFT_ATTRIBUTES)
def test_matches_the_mean_attribute_of_sampled_measures(name):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 24, CODEC.vocab_size)) * np.array([0.5, 1.5, 3.0, 6.0])[:, None, None]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    draws = 6000
    cumulative = probs.cumsum(-1)
    u = rng.random((draws, 4, 24, 1))
    samples = np.minimum((u > cumulative[None]).sum(-1), CODEC.vocab_size - 1)  # inverse-CDF sampling
    monte_carlo = attrs.compute(samples.reshape(-1, 24), name).reshape(draws, 4).mean(0)
    expected = soft_attribute(tf.constant(probs, tf.float32), name).numpy()
    np.testing.assert_allclose(expected, monte_carlo, atol=0.01)


def test_pitch_range_of_a_hand_made_distribution():
    # tick 0: pitch 0 surely; tick 1: pitch 10 with probability 0.5, else HOLD; other ticks HOLD
    probs = np.zeros((1, 24, CODEC.vocab_size), np.float32)
    probs[0, :, CODEC.hold] = 1.0
    probs[0, 0] = 0.0
    probs[0, 0, 0] = 1.0
    probs[0, 1, CODEC.hold] = 0.5
    probs[0, 1, 10] = 0.5
    value = float(soft_attribute(tf.constant(probs), "pitch_range")[0])
    assert value == pytest.approx(0.5 * 10 / attrs.PITCH_RANGE_NORM, abs=1e-5)


@pytest.mark.parametrize("name", SOFT_ATTRIBUTES)
def test_gradients_flow(name):
    logits = tf.Variable(tf.random.normal([2, 24, CODEC.vocab_size], seed=1))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(soft_attribute(tf.nn.softmax(logits), name))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(value, logits)))) > 0


def test_every_attribute_has_a_soft_form_and_unknown_names_are_refused():
    assert SOFT_ATTRIBUTES == attrs.ATTRIBUTE_NAMES
    with pytest.raises(ValueError, match="loudness"):
        soft_attribute(tf.zeros([1, 24, CODEC.vocab_size]), "loudness")


def test_contour_of_a_hand_made_distribution():
    # tick 0: pitch 5; tick 6: pitch 9 or pitch 1 (each 1/2); tick 12: pitch 3 with probability 1/2, else HOLD
    probs = np.zeros((1, 24, CODEC.vocab_size), np.float32)
    probs[0, :, CODEC.hold] = 1.0
    for tick in (0, 6):
        probs[0, tick, CODEC.hold] = 0.0
    probs[0, 0, 5] = 1.0
    probs[0, 6, 9] = probs[0, 6, 1] = 0.5
    probs[0, 12, CODEC.hold] = probs[0, 12, 3] = 0.5
    # expected sum of step signs: step 0->6 has mean sign 0; step 6->12 (when 12 sounds, p=1/2) has mean
    # sign (sign(3-9) + sign(3-1)) / 2 = 0; so the numerator is 0 whatever the number of onsets.
    assert float(soft_attribute(tf.constant(probs), "contour")[0]) == pytest.approx(0.0, abs=1e-6)
    probs[0, 6, 1], probs[0, 6, 9] = 0.0, 1.0  # now 5 -> 9 rises surely, 9 -> 3 falls with p = 1/2
    # E[numerator] = 1 - 1/2; E[onsets] - 1 = 2.5 - 1 = 1.5
    assert float(soft_attribute(tf.constant(probs), "contour")[0]) == pytest.approx(0.5 / 1.5, abs=1e-5)
