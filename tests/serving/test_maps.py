"""The attribute maps fitted at export: an isotonic fit that can be inverted."""

from __future__ import annotations

import numpy as np
import pytest

from music_attr_vae.serving import maps


def test_fit_monotone_map_inverts_a_noisy_rising_relation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=4000)
    value = 1 / (1 + np.exp(-2 * z)) + rng.normal(scale=0.05, size=z.size)
    fitted = maps.fit_monotone_map(z, value)
    assert fitted["direction"] == 1 and fitted["spearman"] > 0.9
    grid, zs = np.array(fitted["value"]), np.array(fitted["z"])
    assert np.all(np.diff(grid) > 0) and np.all(np.diff(zs) >= 0)
    for target in (0.2, 0.5, 0.8):  # inverting the map recovers the true z within the noise
        assert np.interp(target, grid, zs) == pytest.approx(np.log(target / (1 - target)) / 2, abs=0.15)


def test_fit_monotone_map_falling_and_flat():
    z = np.linspace(-2, 2, 500)
    falling = maps.fit_monotone_map(z, -z)
    assert falling["direction"] == -1 and np.all(np.diff(falling["z"]) <= 0)
    assert np.interp(1.0, falling["value"], falling["z"]) == pytest.approx(-1.0, abs=0.05)
    flat = maps.fit_monotone_map(z, np.full_like(z, 0.3))
    assert flat["value_range"] == pytest.approx([0.3, 0.3]) and np.ptp(flat["z"]) == 0
