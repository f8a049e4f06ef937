"""Musical attributes of token measures, in NumPy and as TensorFlow ops.

Every function takes a batch of token measures of shape (N, 24) (see
``codec.py`` for the vocabulary) and returns float32 values of shape (N,).
The NumPy and TF versions compute the same formula and agree to float32
precision (tests/data/test_attributes.py checks this on the corpus).

Definitions (an "onset" is a tick holding a pitch token; rests and holds are not
onsets):

``rhythmic_complexity``
    Toussaint's metrical complexity as used by Pati & Lerch (2019): the onset
    mask dotted with per-tick metrical weights, divided by the sum of the
    weights (27.79).  Within beat b the six ticks weigh ``[w0_b, 1, 2, 0.5, 2, 1]``
    with ``w0 = 0.20, 0.67, 0.25, 0.67`` for beats 1-4: onsets on strong
    positions cost little, off-beat sixteenths and triplets cost a lot.
``pitch_range``
    (highest - lowest onset pitch) / 29, the widest range the vocabulary allows
    (55..84), so it lies in [0, 1]; 0 when the measure has fewer than 2 notes.
``note_density``
    number of onsets / 24, in [0, 1] (AR-VAE, Pati & Lerch 2020).
``contour``
    mean sign of the pitch step between consecutive onsets, in [-1, 1]:
    +1 for a measure that only rises, -1 for one that only falls, 0 for fewer
    than 2 notes (AR-VAE's contour, normalised by the number of steps).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from music_attr_vae.data.codec import CODEC

ATTRIBUTE_NAMES = ("rhythmic_complexity", "pitch_range", "note_density", "contour")

_BEAT_W0 = (0.20, 0.67, 0.25, 0.67)
METRICAL_WEIGHTS = np.array(
    [w for w0 in _BEAT_W0 for w in (w0, 1.0, 2.0, 0.5, 2.0, 1.0)], dtype=np.float32
)
METRICAL_WEIGHT_SUM = 27.79  # == METRICAL_WEIGHTS.sum()
PITCH_RANGE_NORM = float(CODEC.max_pitch - CODEC.min_pitch)  # 29

# PREV[i, j] = 1 when tick j comes before tick i: used to find the previous onset.
_BEFORE = np.tril(np.ones((CODEC.ticks_per_measure,) * 2, np.float32), k=-1)


def attribute_index(name: str) -> int:
    """Column of ``name`` in the (N, 4) attribute arrays; a clear error for unknown names."""
    try:
        return ATTRIBUTE_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown attribute {name!r}; known attributes: {', '.join(ATTRIBUTE_NAMES)}") from None


# ---------------------------------------------------------------- NumPy


def _np_tokens(tokens) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim == 1:
        arr = arr[None]
    return arr


def rhythmic_complexity(tokens) -> np.ndarray:
    onsets = (_np_tokens(tokens) < CODEC.num_pitches).astype(np.float32)
    return (onsets @ METRICAL_WEIGHTS / np.float32(METRICAL_WEIGHT_SUM)).astype(np.float32)


def note_density(tokens) -> np.ndarray:
    onsets = _np_tokens(tokens) < CODEC.num_pitches
    return (onsets.sum(-1) / np.float32(CODEC.ticks_per_measure)).astype(np.float32)


def pitch_range(tokens) -> np.ndarray:
    arr = _np_tokens(tokens)
    onsets = arr < CODEC.num_pitches
    pitch = arr.astype(np.float32)
    high = np.where(onsets, pitch, -np.inf).max(-1)
    low = np.where(onsets, pitch, np.inf).min(-1)
    many = onsets.sum(-1) >= 2
    return np.where(many, (high - low) / np.float32(PITCH_RANGE_NORM), 0.0).astype(np.float32)


def contour(tokens) -> np.ndarray:
    arr = _np_tokens(tokens)
    onsets = arr < CODEC.num_pitches
    pitch = arr.astype(np.float32)
    positions = np.arange(CODEC.ticks_per_measure, dtype=np.float32)
    # Index of the latest onset strictly before each tick (-1 when none).
    idx = np.where(onsets, positions, -1.0)
    prev = np.max(np.where(_BEFORE[None] > 0, idx[:, None, :], -1.0), axis=-1).astype(np.int64)
    prev_pitch = np.take_along_axis(pitch, np.maximum(prev, 0), axis=-1)
    step = onsets & (prev >= 0)
    signs = np.where(step, np.sign(pitch - prev_pitch), 0.0).sum(-1)
    n_steps = step.sum(-1)
    return np.where(n_steps > 0, signs / np.maximum(n_steps, 1), 0.0).astype(np.float32)


_NUMPY_FUNCS = {
    "rhythmic_complexity": rhythmic_complexity,
    "pitch_range": pitch_range,
    "note_density": note_density,
    "contour": contour,
}


def compute(tokens, name: str) -> np.ndarray:
    """One attribute (by name) of token measures (N, 24) -> (N,)."""
    attribute_index(name)
    return _NUMPY_FUNCS[name](tokens)


def compute_all(tokens) -> np.ndarray:
    """All attributes, (N, 24) -> (N, 4) in ATTRIBUTE_NAMES order."""
    return np.stack([_NUMPY_FUNCS[n](tokens) for n in ATTRIBUTE_NAMES], axis=-1)


def as_dict(tokens) -> Dict[str, np.ndarray]:
    return {n: _NUMPY_FUNCS[n](tokens) for n in ATTRIBUTE_NAMES}


# ---------------------------------------------------------------- TensorFlow


def tf_compute_all(tokens):
    """TF op: int tokens (B, 24) -> float32 attributes (B, 4), same formulas as NumPy."""
    import tensorflow as tf

    tokens = tf.convert_to_tensor(tokens)
    onsets = tokens < CODEC.num_pitches
    onsets_f = tf.cast(onsets, tf.float32)
    pitch = tf.cast(tokens, tf.float32)
    count = tf.reduce_sum(onsets_f, -1)

    rhythm = tf.linalg.matvec(onsets_f, tf.constant(METRICAL_WEIGHTS)) / METRICAL_WEIGHT_SUM
    density = count / float(CODEC.ticks_per_measure)

    big = tf.constant(1e9, tf.float32)
    high = tf.reduce_max(tf.where(onsets, pitch, -big), -1)
    low = tf.reduce_min(tf.where(onsets, pitch, big), -1)
    prange = tf.where(count >= 2, (high - low) / PITCH_RANGE_NORM, 0.0)

    positions = tf.range(CODEC.ticks_per_measure, dtype=tf.float32)
    idx = tf.where(onsets, positions[None, :], -1.0)
    before = tf.constant(_BEFORE) > 0
    prev = tf.reduce_max(tf.where(before[None], idx[:, None, :], -1.0), -1)
    prev_i = tf.cast(tf.maximum(prev, 0.0), tf.int32)
    prev_pitch = tf.gather(pitch, prev_i, batch_dims=1)
    step = tf.logical_and(onsets, prev >= 0)
    signs = tf.reduce_sum(tf.where(step, tf.sign(pitch - prev_pitch), 0.0), -1)
    n_steps = tf.reduce_sum(tf.cast(step, tf.float32), -1)
    cont = tf.where(n_steps > 0, signs / tf.maximum(n_steps, 1.0), 0.0)

    return tf.stack([rhythm, prange, density, cont], axis=-1)
