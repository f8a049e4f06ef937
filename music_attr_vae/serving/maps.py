"""The attribute maps of an export: each regularised attribute fitted isotonically on its latent dim.

For each regularised attribute, the attribute of the reference measures (or,
without them, of measures decoded from prior samples) is regressed on
``z_mean[:, dim]``; the fit is stored as ``MAP_KNOTS`` strictly increasing
attribute values and the dim values that produce them, so setting an attribute
is a table lookup and a linear interpolation.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from music_attr_vae import batching, configs_loader
from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC

MAP_KNOTS = 65
MAX_FIT_MEASURES = 20000
PRIOR_FIT_SAMPLES = 4096
REFERENCE_SAMPLE = 256
FIT_BATCH = 512


def _batched(fn, array: np.ndarray, batch: int = FIT_BATCH) -> List:
    return [fn(part) for part in batching.batches(array, batch)]


def fit_monotone_map(z: np.ndarray, values: np.ndarray, knots: int = MAP_KNOTS) -> dict:
    """Isotonic fit of an attribute against one latent dim, stored for inversion.

    Returns ``{"value": [...], "z": [...], "quantiles": [...], "direction": +1|-1,
    "value_range": [lo, hi], "z_range": [z at lo, z at hi], "spearman": r, "count": n}``
    (``quantiles``: ``knots`` evenly spaced quantiles of ``z``, for ``sample``) where ``value`` is a
    strictly increasing grid of ``knots`` attribute values spanning the fitted
    range and ``z`` the dim values mapping to them (monotone, increasing when
    ``direction`` is +1).  Plateaus of the isotonic fit are represented by their
    midpoints, so interpolation between them moves smoothly along the dim.
    """
    from scipy import stats
    from sklearn.isotonic import IsotonicRegression

    z = np.asarray(z, np.float64)
    values = np.asarray(values, np.float64)
    order = np.argsort(z, kind="stable")
    z, values = z[order], values[order]
    spearman = float(stats.spearmanr(z, values)[0]) if np.ptp(values) > 0 and np.ptp(z) > 0 else 0.0
    direction = -1 if spearman < 0 else 1
    fitted = IsotonicRegression(increasing=direction > 0).fit_transform(z, values)
    levels, first = np.unique(fitted, return_index=True)
    last = len(fitted) - 1 - np.unique(fitted[::-1], return_index=True)[1]
    mids = (z[first] + z[last]) / 2.0
    lo, hi = float(levels[0]), float(levels[-1])
    if len(levels) == 1:  # flat: the dim tells nothing; stay at the median
        grid = np.linspace(lo, lo + 1e-6, knots)
        z_grid = np.full(knots, float(np.median(z)))
    else:
        grid = np.linspace(lo, hi, knots)
        z_grid = np.interp(grid, levels, mids)
    return {
        "value": grid.astype(np.float32).tolist(),
        "z": z_grid.astype(np.float32).tolist(),
        "quantiles": np.quantile(z, np.linspace(0.0, 1.0, knots)).astype(np.float32).tolist(),
        "direction": direction,
        "value_range": [lo, hi],
        "z_range": [float(z_grid[0]), float(z_grid[-1])],
        "spearman": spearman,
        "count": int(len(z)),
    }


def fit_maps(model, config, reference_tokens: Optional[np.ndarray], seed: int = 0):
    """Fit the maps of every regularised dim; returns (maps, sample tokens, how)."""
    import tensorflow as tf

    dims = configs_loader.regularized_dims(config)
    if reference_tokens is not None:
        tokens = CODEC.check_tokens(reference_tokens)
        if len(tokens) == 0:
            raise ValueError("reference_tokens is empty")
        if len(tokens) > MAX_FIT_MEASURES:
            pick = np.random.default_rng(seed).choice(len(tokens), MAX_FIT_MEASURES, replace=False)
            tokens = tokens[np.sort(pick)]
        z = np.concatenate(_batched(lambda b: model.encode(tf.constant(b))[0].numpy(), tokens))
        source = "reference_tokens"
    else:
        z_dim = int(config.model.z_dim)
        z = np.random.default_rng(seed).standard_normal((PRIOR_FIT_SAMPLES, z_dim)).astype(np.float32)
        tokens = np.concatenate(
            _batched(lambda b: np.asarray(model.decode(tf.constant(b), temperature=0.0)), z)
        ).astype(np.int32)
        source = "prior_samples"
    values = attrs.compute_all(tokens)
    maps = {}
    for name, dim in dims.items():
        maps[name] = dict(fit_monotone_map(z[:, dim], values[:, attrs.attribute_index(name)]), dim=dim)
    pick = np.random.default_rng(seed + 1).permutation(len(tokens))[:REFERENCE_SAMPLE]
    return maps, tokens[np.sort(pick)], {"source": source, "count": int(len(tokens))}
