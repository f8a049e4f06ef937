"""Each metric on synthetic latents whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from music_attr_vae.evaluation import metrics

N = 4000


@pytest.fixture()
def rng():
    return np.random.default_rng(123)


def _noise_latents(rng, n=N, d=8):
    return rng.normal(size=(n, d))


def test_interpretability_finds_the_dim_that_equals_the_attribute(rng):
    z = _noise_latents(rng)
    a = rng.uniform(size=N)
    z[:, 2] = a
    result = metrics.interpretability(z, a)
    assert result.dim == 2
    assert result.r2 == pytest.approx(1.0, abs=1e-9)
    assert result.mutual_information.shape == (8,)
    assert result.mutual_information[2] > 10 * np.delete(result.mutual_information, 2).max()


def test_interpretability_of_independent_noise_is_near_zero(rng):
    z = _noise_latents(rng)
    a = rng.uniform(size=N)
    assert metrics.interpretability(z, a).r2 < 0.01


def test_linear_r2_matches_the_signal_to_noise_ratio(rng):
    a = rng.normal(size=20000)
    x = a + rng.normal(size=20000)  # var(a) / var(x) = 1/2
    assert metrics.linear_r2(x, a) == pytest.approx(0.5, abs=0.02)
    assert metrics.linear_r2(np.ones(10), np.arange(10)) == 0.0


def test_cubic_relation_is_monotone_but_not_linear(rng):
    z = _noise_latents(rng, n=20000)
    a = z[:, 0] ** 3
    assert metrics.spearman(z[:, 0], a) == pytest.approx(1.0, abs=1e-12)
    assert metrics.spearman(z[:, 0], -a) == pytest.approx(-1.0, abs=1e-12)
    assert metrics.isotonic_r2(z[:, 0], a) == pytest.approx(1.0, abs=1e-9)
    assert metrics.isotonic_r2(z[:, 0], -a) == pytest.approx(1.0, abs=1e-9)
    # corr(z, z^3)^2 = 9/15 for a standard normal z.
    assert metrics.linear_r2(z[:, 0], a) == pytest.approx(0.6, abs=0.05)
    # The interpretability metric keeps the paper's linear definition.
    result = metrics.interpretability(z, a)
    assert result.dim == 0 and result.r2 < 0.7


def test_spearman_handles_ties_like_average_ranks(rng):
    # ranks of y are 1.5, 1.5, 3.5, 3.5 -> rho = 2 / sqrt(5)
    assert metrics.spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(2 / np.sqrt(5))
    x = rng.integers(0, 5, size=300)
    y = x + rng.integers(0, 3, size=300)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert metrics.spearman([1, 2, 3], [5, 5, 5]) == 0.0


def test_isotonic_r2_of_a_non_monotone_relation_is_low(rng):
    # Best increasing fit to x^2 on U(-1, 1): flat at 1/4 up to x = 1/2, then x^2,
    # leaving a residual variance of 0.05625 of the total 4/45 -> R^2 = 0.367.
    x = rng.uniform(-1, 1, size=20000)
    assert metrics.isotonic_r2(x, x**2) == pytest.approx(1 - 0.05625 / (4 / 45), abs=0.02)


def test_mig_high_for_a_copied_attribute_and_zero_for_noise(rng):
    z = _noise_latents(rng)
    a = np.stack([rng.uniform(size=N), rng.uniform(size=N)], axis=1)
    z[:, 5] = a[:, 0]
    scores = metrics.mig(z, a)
    assert scores.shape == (2,)
    assert scores[0] > 0.9
    assert scores[1] < 0.05


def test_mig_keeps_discrete_attribute_classes(rng):
    a = rng.integers(0, 4, size=N).astype(float)
    codes = metrics.discretize(a)
    assert sorted(np.unique(codes)) == [0, 1, 2, 3]
    z = _noise_latents(rng)
    z[:, 0] = a + rng.normal(scale=0.01, size=N)
    assert metrics.mig(z, a)[0] > 0.95
    # Two dims carrying the same information leave no gap.
    z[:, 1] = z[:, 0]
    assert metrics.mig(z, a)[0] < 0.01


def test_attribute_code_mig_is_one_for_independent_attributes_and_low_for_correlated_ones(rng):
    independent = np.stack([rng.uniform(size=N), rng.integers(0, 5, size=N).astype(float)], axis=1)
    assert np.all(metrics.attribute_code_mig(independent) > 0.9)
    base = rng.uniform(size=N)
    correlated = np.stack([base, base + rng.normal(scale=0.02, size=N), rng.uniform(size=N)], axis=1)
    reference = metrics.attribute_code_mig(correlated)
    assert reference[0] < 0.5 and reference[1] < 0.5 and reference[2] > 0.9
    # near-exact copies of the correlated pair score what the attributes themselves score
    z = _noise_latents(rng)
    z[:, 0] = correlated[:, 0] + rng.normal(scale=0.01, size=N)
    z[:, 1] = correlated[:, 1] + rng.normal(scale=0.01, size=N)
    assert np.all(metrics.mig(z, correlated)[:2] <= reference[:2] + 0.02)
    # one dim for both opens the gap again
    z[:, 1] = rng.normal(size=N)
    assert np.all(metrics.mig(z, correlated)[:2] > reference[:2] + 0.2)
    with pytest.raises(ValueError, match="at least 2 attributes"):
        metrics.attribute_code_mig(base)


def test_continuous_mig_follows_ar_vae_definition(rng):
    z = _noise_latents(rng)
    a = np.round(rng.uniform(size=N) * 12) / 12  # a discrete-valued attribute, as pitch range is
    z[:, 3] = a + rng.normal(scale=0.02, size=N)
    mi = metrics.continuous_mutual_information(z, a)
    h = metrics.continuous_self_information(a)
    top = np.sort(mi)[::-1]
    assert metrics.mig_continuous(mi, h) == pytest.approx((top[0] - top[1]) / h)
    assert np.argmax(mi) == 3 and metrics.mig_continuous(mi, h) > 0.2
    # on a discrete attribute the normaliser is close to its entropy (13 equally likely values);
    # on a continuous one it grows with the number of points
    assert h == pytest.approx(np.log(13), rel=0.05)
    c = rng.uniform(size=N)
    assert metrics.continuous_self_information(c, max_points=500) + 1.0 < metrics.continuous_self_information(c)
    # a second copy closes the gap; a constant attribute scores 0
    z[:, 4] = z[:, 3]
    assert metrics.mig_continuous(metrics.continuous_mutual_information(z, a), h) < 0.02
    assert metrics.continuous_self_information(np.ones(N)) == 0.0
    assert metrics.mig_continuous(mi, 0.0) == 0.0
    with pytest.raises(ValueError, match="at least 2 latent"):
        metrics.mig_continuous([0.3], h)


def test_sap_gap_matches_known_r2_values(rng):
    n = 40000
    a = rng.normal(size=n)
    z = rng.normal(size=(n, 6))
    z[:, 1] = a + 0.5 * rng.normal(size=n)  # R^2 = 1 / 1.25 = 0.8
    z[:, 4] = a + 1.0 * rng.normal(size=n)  # R^2 = 0.5
    scores = metrics.sap_scores(z, a)
    assert scores[1, 0] == pytest.approx(0.8, abs=0.01)
    assert scores[4, 0] == pytest.approx(0.5, abs=0.01)
    assert metrics.sap(z, a)[0] == pytest.approx(0.3, abs=0.02)


def test_modularity_prefers_a_modular_code_to_a_mixed_one(rng):
    a = rng.uniform(size=(N, 2))
    modular = np.stack([a[:, 0], a[:, 1]], axis=1)
    mixed = np.stack([a[:, 0] + a[:, 1], a[:, 0] - a[:, 1]], axis=1)
    m_modular = metrics.modularity(modular, a)
    m_mixed = metrics.modularity(mixed, a)
    assert m_modular > 0.95
    assert m_mixed < 0.7
    assert 0.0 <= m_mixed <= 1.0


def test_monotone_step_fractions_count_flat_and_rising_steps():
    values = [[0, 1, 1, 2], [3, 2, 2, 1]]
    non_decreasing, increasing = metrics.monotone_step_fractions(values)
    assert non_decreasing == pytest.approx(4 / 6)
    assert increasing == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="at least 2 steps"):
        metrics.monotone_step_fractions([[1.0]])


def test_traversal_spearman_counts_flat_traversals_as_no_control():
    steps = np.linspace(-3, 3, 5)
    values = [[0.0, 0.1, 0.2, 0.3, 0.4], [0.5] * 5, [0.4, 0.3, 0.2, 0.1, 0.0]]
    assert metrics.traversal_spearman(steps, values) == pytest.approx((1 + 0 - 1) / 3)
    with pytest.raises(ValueError, match="steps"):
        metrics.traversal_spearman(steps[:4], values)


def test_kl_to_standard_normal_closed_form():
    mu = np.array([[0.0, 0.0], [1.0, 0.0]])
    log_var = np.zeros((2, 2))
    np.testing.assert_allclose(metrics.kl_to_standard_normal(mu, log_var), [0.0, 0.5])
    # log_var = log 2: 0.5 * (2 - 1 - log 2) per dim
    np.testing.assert_allclose(
        metrics.kl_to_standard_normal(np.zeros((1, 1)), np.log([[2.0]])), [0.5 * (1 - np.log(2))]
    )


def test_subsample_is_deterministic_and_bounded():
    a = metrics.subsample_indices(10000, 500, seed=0)
    b = metrics.subsample_indices(10000, 500, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 500 and len(np.unique(a)) == 500 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(metrics.subsample_indices(10, 500), np.arange(10))


def test_bad_shapes_are_rejected_with_clear_errors(rng):
    with pytest.raises(ValueError, match="differ in length"):
        metrics.interpretability(rng.normal(size=(10, 3)), rng.normal(size=9))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        metrics.mig(rng.normal(size=10), rng.normal(size=10))


def test_sap_scores_match_single_dim_regressions(rng):
    z = rng.normal(size=(500, 5))
    z[:, 3] = 1.0  # a constant dim explains nothing
    a = np.column_stack([z[:, 0] + rng.normal(size=500), rng.normal(size=500)])
    scores = metrics.sap_scores(z, a)
    for i in range(5):
        for k in range(2):
            assert scores[i, k] == pytest.approx(metrics.linear_r2(z[:, i], a[:, k]), abs=1e-12)
    assert np.all(scores[3] == 0.0)
