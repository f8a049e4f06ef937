"""Latent-space metrics: interpretability, monotonicity, disentanglement, control.

Pure NumPy / scikit-learn / SciPy functions over arrays; nothing here knows
about models or files, so every metric can be tested on synthetic latents whose
answer is known (tests/evaluation/test_metrics.py).

Conventions: ``z`` is (N, D) float latents (usually the posterior means of the
test set), ``a`` is one attribute (N,) or all attributes (N, K).  Scores that
are undefined (a constant attribute or dimension) come back as 0.0 rather than
NaN, because "no measurable relation" is what a constant input means here and
JSON has no NaN.

Metrics and where they come from:

* :func:`interpretability` -- Adel et al. (2018) as used by Pati & Lerch (2019):
  the dimension with the highest (continuous, KSG) mutual information with the
  attribute, then the R^2 of a linear regression of the attribute on it.
* :func:`isotonic_r2`, :func:`spearman` -- the monotone view of the same
  question (AR-VAE, Pati & Lerch 2020): a dimension that orders the attribute
  perfectly but spaces it by rank scores 1 here and less than 1 on the linear
  metric.
* :func:`mig` -- mutual information gap (Chen et al. 2018) on histogram-binned
  latents and attributes (plug-in estimator), as disentanglement_lib computes it.
* :func:`mig_continuous` -- the same gap with continuous (KSG) estimates, the
  definition AR-VAE's published code uses: I(dim; attribute) from
  ``mutual_info_regression``, divided by the same estimator's I(attribute; attribute).
* :func:`sap` -- separated attribute predictability (Kumar et al. 2018),
  regression variant: R^2 of each attribute from each single dimension, gap
  between the best two dimensions.
* :func:`modularity` -- Ridgeway & Zemel (2018): how close each dimension's
  mutual-information profile over the attributes is to a one-hot template.
* :func:`monotone_step_fractions`, :func:`traversal_spearman` -- control on
  decoded output along a latent traversal.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

# SciPy and scikit-learn are imported inside the functions that use them: `generate`
# needs only the traversal statistics, and importing both costs it about a second.

DEFAULT_MI_MAX_POINTS = 5000
DEFAULT_NUM_BINS = 20


# ---------------------------------------------------------------- helpers


def _as_latents(z) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"latents must have shape (N, D); got {z.shape}")
    return z


def _as_attributes(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"attributes must have shape (N,) or (N, K); got {a.shape}")
    return a


def _check_lengths(z: np.ndarray, a: np.ndarray) -> None:
    if len(z) != len(a):
        raise ValueError(f"latents and attributes differ in length: {len(z)} vs {len(a)}")
    if len(z) < 2:
        raise ValueError(f"need at least 2 samples; got {len(z)}")


def subsample_indices(n: int, max_points: Optional[int], seed: int = 0) -> np.ndarray:
    """Sorted indices of a deterministic subsample of at most ``max_points`` of ``n`` items.

    The k-NN mutual-information estimator costs O(N log N) per dimension with a
    large constant, so it runs on a subsample; the same seed gives the same
    subsample, so repeated evaluations agree exactly.
    """
    if max_points is None or n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def r2_score(y: np.ndarray, prediction: np.ndarray) -> float:
    """Coefficient of determination, 0.0 for a constant target."""
    y = np.asarray(y, np.float64)
    if len(y) == 0 or np.ptp(y) == 0:
        return 0.0
    from sklearn import metrics as sklearn_metrics

    return float(sklearn_metrics.r2_score(y, np.asarray(prediction, np.float64)))


def linear_r2(x, y) -> float:
    """R^2 of the least-squares fit y ~ slope * x + intercept (in-sample).

    With one regressor and an intercept this equals the squared Pearson
    correlation; it is computed that way, which is exact and cheap.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    sxx, syy = float(xc @ xc), float(yc @ yc)
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0
    return float(min((xc @ yc) ** 2 / (sxx * syy), 1.0))


def spearman(x, y) -> float:
    """Spearman rank correlation with average ranks for ties; 0.0 when either input is constant."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"spearman: inputs differ in length: {len(x)} vs {len(y)}")
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    from scipy import stats

    return float(np.clip(stats.spearmanr(x, y).statistic, -1.0, 1.0))


def isotonic_r2(x, y) -> float:
    """R^2 of the best monotone (increasing or decreasing) fit y ~ f(x).

    This asks whether ``x`` *orders* ``y``, whatever the spacing: a latent that
    ranks the attribute perfectly scores 1 even if the relation is far from a
    straight line (e.g. a skewed attribute regularised with the sign loss).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    from sklearn.isotonic import IsotonicRegression

    best = 0.0
    for increasing in (True, False):
        fit = IsotonicRegression(increasing=increasing, out_of_bounds="clip").fit(x, y)
        best = max(best, r2_score(y, fit.predict(x)))
    return best


# ---------------------------------------------------------------- interpretability


@dataclasses.dataclass
class Interpretability:
    """Interpretability of one attribute: the chosen dim and the linear R^2 on it."""

    dim: int
    r2: float
    mutual_information: np.ndarray  # (D,) nats, per latent dimension

    def to_dict(self) -> Dict[str, object]:
        return {
            "dim": int(self.dim),
            "r2": float(self.r2),
            "mutual_information": [float(v) for v in self.mutual_information],
        }


def continuous_mutual_information(
    z, a, *, max_points: Optional[int] = DEFAULT_MI_MAX_POINTS, seed: int = 0, n_neighbors: int = 3
) -> np.ndarray:
    """KSG mutual information (nats) between each latent dim and one attribute: (D,).

    Runs on a deterministic subsample of at most ``max_points`` samples (see
    :func:`subsample_indices`) with a fixed estimator seed.
    """
    z = _as_latents(z)
    a = np.asarray(a, np.float64).reshape(-1)
    _check_lengths(z, a)
    idx = subsample_indices(len(z), max_points, seed)
    if np.ptp(a[idx]) == 0:
        return np.zeros(z.shape[1])
    from sklearn.feature_selection import mutual_info_regression

    mi = mutual_info_regression(z[idx], a[idx], n_neighbors=n_neighbors, random_state=seed)
    return np.maximum(mi, 0.0)


def continuous_self_information(
    a, *, max_points: Optional[int] = DEFAULT_MI_MAX_POINTS, seed: int = 0, n_neighbors: int = 3
) -> float:
    """KSG estimate of I(a; a) in nats, on the subsample :func:`continuous_mutual_information` uses.

    The normaliser of AR-VAE's MIG.  For an attribute with few distinct values
    (all four here) it comes out close to the entropy of those values (ties are
    broken by sklearn's tiny noise); for a truly continuous one it grows with
    the number of points, like their logarithm.  0 for a constant attribute.
    """
    a = np.asarray(a, np.float64).reshape(-1)
    idx = subsample_indices(len(a), max_points, seed)
    if np.ptp(a[idx]) == 0:
        return 0.0
    from sklearn.feature_selection import mutual_info_regression

    return float(mutual_info_regression(a[idx, None], a[idx], n_neighbors=n_neighbors, random_state=seed)[0])


def top_two_gap(scores, what: str) -> np.ndarray:
    """Per column of ``scores`` (D dims, K columns): best minus second-best dim, (K,).

    The gap MIG and SAP take; ``what`` names the metric in the error for fewer than 2 dims.
    """
    scores = np.asarray(scores, np.float64)
    if scores.shape[0] < 2:
        raise ValueError(f"{what} needs at least 2 latent dimensions")
    top = np.sort(scores, axis=0)[::-1]
    return top[0] - top[1]


def mig_continuous(mutual_information, self_information: float) -> float:
    """MIG of one attribute from continuous estimates: (best - second-best dim MI) / I(a; a).

    ``mutual_information`` is :func:`continuous_mutual_information` (D,), and
    ``self_information`` :func:`continuous_self_information` on the same
    points.  AR-VAE's code defines MIG this way (not clipped); 0 when the
    attribute is constant.
    """
    gap = top_two_gap(np.asarray(mutual_information, np.float64).reshape(-1, 1), "MIG")[0]
    return float(gap / self_information) if self_information > 0 else 0.0


def interpretability(
    z, a, *, max_points: Optional[int] = DEFAULT_MI_MAX_POINTS, seed: int = 0
) -> Interpretability:
    """Adel et al. (2018) interpretability of one attribute, with linear regression.

    1. the latent dimension with the highest mutual information with the
       attribute (continuous k-NN estimator, on a subsample);
    2. the R^2 of the linear regression attribute ~ that dimension, on all samples.
    """
    z = _as_latents(z)
    a = np.asarray(a, np.float64).reshape(-1)
    mi = continuous_mutual_information(z, a, max_points=max_points, seed=seed)
    dim = int(np.argmax(mi))
    return Interpretability(dim=dim, r2=linear_r2(z[:, dim], a), mutual_information=mi)


# ---------------------------------------------------------------- discretised mutual information


def discretize(x, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Equal-width histogram bins per column: (N, K) float -> (N, K) int codes.

    A column with at most ``num_bins`` distinct values keeps them as its
    classes (so a discrete attribute is not split or merged arbitrarily).
    """
    x = _as_attributes(x)
    out = np.zeros(x.shape, np.int64)
    for k in range(x.shape[1]):
        col = x[:, k]
        values = np.unique(col)
        if len(values) <= num_bins:
            out[:, k] = np.searchsorted(values, col)
        else:
            edges = np.histogram_bin_edges(col, bins=num_bins)
            out[:, k] = np.digitize(col, edges[1:-1])
    return out


def discrete_entropy(codes: np.ndarray) -> float:
    """Entropy (nats) of integer codes."""
    _, counts = np.unique(codes, return_counts=True)
    from scipy import stats

    return float(stats.entropy(counts))


def discrete_mutual_information(z, a, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """Mutual information (nats) between binned latents and binned attributes: (D, K)."""
    z = _as_latents(z)
    a = _as_attributes(a)
    _check_lengths(z, a)
    from sklearn.metrics import mutual_info_score

    zc, ac = discretize(z, num_bins), discretize(a, num_bins)
    mi = np.zeros((z.shape[1], a.shape[1]))
    for i in range(z.shape[1]):
        for k in range(a.shape[1]):
            mi[i, k] = mutual_info_score(ac[:, k], zc[:, i])
    return mi


def mig(z, a, num_bins: int = DEFAULT_NUM_BINS, mutual_information: Optional[np.ndarray] = None) -> np.ndarray:
    """Mutual information gap per attribute: (K,) in [0, 1].

    For each attribute, (MI of the best dim - MI of the second best) / H(attribute),
    on histogram-binned values.  0 for a constant attribute.  A precomputed
    :func:`discrete_mutual_information` matrix (same bins) may be passed to save its cost.
    """
    mi = discrete_mutual_information(z, a, num_bins) if mutual_information is None else mutual_information
    codes = discretize(a, num_bins)
    gaps = top_two_gap(mi, "MIG")
    out = np.zeros(mi.shape[1])
    for k in range(mi.shape[1]):
        entropy = discrete_entropy(codes[:, k])
        if entropy > 0:
            out[k] = np.clip(gaps[k] / entropy, 0.0, 1.0)
    return out


def attribute_code_mig(a, num_bins: int = DEFAULT_NUM_BINS) -> np.ndarray:
    """MIG per attribute of the code whose dims are the attributes themselves, one dim each: (K,).

    The reference for a model that ties each attribute to a dim of its own.
    Correlated attributes lower it: when attribute k is nearly a function of
    attribute j, j's dim also tells much about k, so the gap for k is small.
    Exact copies of the attributes score exactly this; a model scores above
    it only where a dim tells less about a correlated attribute than its own
    attribute does: a noisier copy, or no dim of its own for one of the pair
    (then one dim answers for both and both gaps open).
    """
    a = _as_attributes(a)
    if a.shape[1] < 2:
        raise ValueError("the attribute code's MIG needs at least 2 attributes")
    return mig(a, a, num_bins)


def modularity(z, a, num_bins: int = DEFAULT_NUM_BINS, mutual_information: Optional[np.ndarray] = None) -> float:
    """Ridgeway & Zemel (2018) modularity in [0, 1], averaged over latent dims.

    For dim i with MI profile m_i over the K attributes, the template keeps only
    its largest entry theta_i; modularity_i = 1 - sum_k (m_ik - t_ik)^2 / (theta_i^2 (K-1)).
    Dims that share no information with any attribute (theta_i = 0) carry no
    evidence either way and are left out of the average.  ``mutual_information`` as in :func:`mig`.
    """
    mi = discrete_mutual_information(z, a, num_bins) if mutual_information is None else mutual_information
    k = mi.shape[1]
    if k < 2:
        raise ValueError("modularity needs at least 2 attributes")
    theta = mi.max(axis=1)
    keep = theta > 0
    if not np.any(keep):
        return 0.0
    mi, theta = mi[keep], theta[keep]
    template = np.zeros_like(mi)
    template[np.arange(len(mi)), mi.argmax(axis=1)] = theta
    deviation = ((mi - template) ** 2).sum(axis=1) / (theta**2 * (k - 1))
    return float(np.mean(1.0 - deviation))


# ---------------------------------------------------------------- SAP


def sap_scores(z, a) -> np.ndarray:
    """R^2 of a linear regression of each attribute on each single latent dim: (D, K).

    All pairs at once as squared Pearson correlations (see :func:`linear_r2`);
    a constant dim or attribute scores 0.
    """
    z = _as_latents(z)
    a = _as_attributes(a)
    _check_lengths(z, a)
    zc, ac = z - z.mean(axis=0), a - a.mean(axis=0)
    zn, an = np.sqrt((zc**2).sum(axis=0)), np.sqrt((ac**2).sum(axis=0))
    cov = zc.T @ ac
    denom = np.outer(zn, an)
    r2 = np.divide(cov**2, denom**2, out=np.zeros_like(cov), where=denom > 0)
    return np.clip(r2, 0.0, 1.0)


def sap(z, a) -> np.ndarray:
    """SAP per attribute (regression variant, Kumar et al. 2018): (K,) in [0, 1].

    The gap between the best and second-best single-dim R^2 of each attribute.
    """
    return top_two_gap(sap_scores(z, a), "SAP")


# ---------------------------------------------------------------- control along traversals


def monotone_step_fractions(values) -> Tuple[float, float]:
    """Fractions of traversal steps along which the attribute does not fall / strictly rises.

    ``values`` is (T, S): T traversals of S steps each, ordered from the low to
    the high end of the latent dimension.  Returns (non-decreasing fraction,
    strictly increasing fraction) over all T * (S - 1) steps.  A decoder that
    often emits the same measure for neighbouring values scores high on the
    first and low on the second.
    """
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.shape[1] < 2:
        raise ValueError(f"a traversal needs at least 2 steps; got {values.shape[1]}")
    diffs = np.diff(values, axis=1)
    return float(np.mean(diffs >= 0)), float(np.mean(diffs > 0))


def traversal_spearman(steps, values) -> float:
    """Mean over traversals of the Spearman correlation between the dim value and the attribute.

    ``steps`` is (S,) latent values, ``values`` (T, S) decoded attributes.  A
    traversal along which the attribute never changes counts as 0 (no control).
    """
    steps = np.asarray(steps, np.float64)
    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        values = values[None]
    if values.shape[1] != len(steps):
        raise ValueError(f"values have {values.shape[1]} steps but {len(steps)} step values were given")
    return float(np.mean([spearman(steps, row) for row in values]))


def kl_to_standard_normal(z_mean, z_log_var) -> np.ndarray:
    """KL(N(mu, exp(log_var)) || N(0, I)) per sample, summed over dims: (N,)."""
    mu = np.asarray(z_mean, np.float64)
    log_var = np.asarray(z_log_var, np.float64)
    return 0.5 * np.sum(np.exp(log_var) + mu**2 - 1.0 - log_var, axis=-1)
