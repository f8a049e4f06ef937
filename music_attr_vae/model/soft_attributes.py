"""Expected attributes of a decoded *distribution* of measures (differentiable).

The decoder's soft free-running pass (``HierarchicalDecoder.soft_free_running``)
gives, for every tick, a distribution ``p[b, t, :]`` over the vocabulary.  This
module computes the expected value of an attribute of a measure whose ticks are
drawn independently from those distributions.  Every formula is exact under
that independence, and for one-hot distributions it equals the attribute of the
token measure (``data.attributes``; tested on the corpus), so the functions are
drop-in differentiable stand-ins used by the consistency loss
(``model/vae.py``, ``regularization.<attribute>.consistency``).

``rhythmic_complexity``
    E[onset mask] . weights / 27.79, with P(onset at t) = sum of the pitch-token
    probabilities of tick t.
``note_density``
    E[number of onsets] / 24.
``pitch_range``
    (highest - lowest onset pitch) / 29 counts the steps k = 1..29 of the pitch
    ladder with a note at or above k *and* a note below k, so
    E[range] = sum_k P(some note >= k and some note < k)
             = sum_k 1 - P(no note >= k) - P(no note < k) + P(no note at all),
    each "no note" probability a product over the 24 ticks (computed as a sum
    of logs).  A measure with fewer than 2 distinct pitches counts 0, as in the
    definition.
``contour``
    (sum of the signs of the steps between consecutive onsets) / (number of
    onsets - 1).  The numerator's expectation is exact: ticks t < s are
    consecutive onsets with probability o_t o_s prod_{t<u<s} (1 - o_u), and
    their step's expected sign is sum_ij q_ti q_sj sign(j - i) / (o_t o_s).
    The ratio's expectation has no closed form, so the stand-in divides the
    expected numerator by max(E[onsets] - 1, 1): exact on one-hot
    distributions (any number of onsets), and close to the Monte Carlo mean
    on peaked ones (tests/model/test_soft_attributes.py).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from music_attr_vae.data.codec import CODEC
from music_attr_vae.data.attributes import METRICAL_WEIGHT_SUM, METRICAL_WEIGHTS, PITCH_RANGE_NORM

_EPS = 1e-6


def _pitch_probs(probs):
    """(B, 24, V) token probabilities -> (B, 24, 30) probabilities of an onset at each pitch."""
    return tf.cast(probs, tf.float32)[..., : CODEC.num_pitches]


def soft_rhythmic_complexity(probs):
    onset = tf.reduce_sum(_pitch_probs(probs), -1)
    return tf.linalg.matvec(onset, tf.constant(METRICAL_WEIGHTS)) / METRICAL_WEIGHT_SUM


def soft_note_density(probs):
    return tf.reduce_sum(_pitch_probs(probs), [-2, -1]) / float(CODEC.ticks_per_measure)


def _log_none(p):
    """log P(no tick has the event) from per-tick probabilities p (B, 24, ...), summed over ticks."""
    return tf.reduce_sum(tf.math.log(tf.clip_by_value(1.0 - p, _EPS, 1.0)), axis=1)


def soft_pitch_range(probs):
    q = _pitch_probs(probs)  # (B, 24, 30)
    at_or_above = tf.math.cumsum(q, axis=-1, reverse=True)[..., 1:]  # k = 1..29: P(pitch >= k)
    below = tf.math.cumsum(q, axis=-1)[..., :-1]  # k = 1..29: P(pitch < k)
    none_above = tf.exp(_log_none(at_or_above))  # (B, 29)
    none_below = tf.exp(_log_none(below))
    no_note = tf.exp(_log_none(tf.reduce_sum(q, -1)))[:, None]  # (B, 1)
    both = 1.0 - none_above - none_below + no_note
    return tf.reduce_sum(tf.maximum(both, 0.0), -1) / PITCH_RANGE_NORM


def soft_contour(probs):
    q = _pitch_probs(probs)  # (B, 24, 30)
    onset = tf.reduce_sum(q, -1)  # (B, 24)
    pitches = tf.range(CODEC.num_pitches, dtype=tf.float32)
    sign = tf.sign(pitches[None, :] - pitches[:, None])  # sign[i, j] = sign(j - i)
    step_sign = tf.einsum("bti,ij,bsj->bts", q, sign, q)  # sum_ij q_ti q_sj sign(j - i)
    # log P(no onset on any tick strictly between t and s) = L[s-1] - L[t], L the cumulative sum of logs
    log_silent = tf.math.cumsum(tf.math.log(tf.clip_by_value(1.0 - onset, _EPS, 1.0)), axis=-1)
    previous = tf.concat([tf.zeros_like(log_silent[:, :1]), log_silent[:, :-1]], axis=-1)  # L[s-1]
    gap = tf.exp(tf.minimum(previous[:, None, :] - log_silent[:, :, None], 0.0))  # (B, t, s)
    ticks = CODEC.ticks_per_measure
    later = tf.constant(np.triu(np.ones((ticks, ticks), np.float32), k=1))  # s > t
    numerator = tf.reduce_sum(step_sign * gap * later, [-2, -1])
    return numerator / tf.maximum(tf.reduce_sum(onset, -1) - 1.0, 1.0)


_FUNCTIONS = {
    "rhythmic_complexity": soft_rhythmic_complexity,
    "pitch_range": soft_pitch_range,
    "note_density": soft_note_density,
    "contour": soft_contour,
}


SOFT_ATTRIBUTES = tuple(_FUNCTIONS)


def soft_attribute(probs, name: str):
    """Expected ``name`` (B,) of measures with per-tick token distributions ``probs`` (B, 24, V)."""
    if name not in _FUNCTIONS:
        raise ValueError(
            f"no differentiable form of attribute {name!r} for the consistency loss; "
            f"available: {', '.join(SOFT_ATTRIBUTES)}"
        )
    return _FUNCTIONS[name](probs)
