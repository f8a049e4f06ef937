"""Attributes: hand-computed values on measures written here, and NumPy == TF on the real corpus."""

from __future__ import annotations

import numpy as np
import pytest

from music_attr_vae.data import attributes

from music_attr_vae.data.codec import CODEC

HOLD, MIN_PITCH, REST = CODEC.hold, CODEC.min_pitch, CODEC.rest

W = attributes.METRICAL_WEIGHTS


def measure(events):
    """One token measure from {tick: MIDI pitch or REST}; HOLD elsewhere."""
    row = np.full(CODEC.ticks_per_measure, HOLD, np.int32)
    for tick, value in events.items():
        row[tick] = REST if value == REST else value - MIN_PITCH
    return row


# Four quarter notes rising C D E F.
QUARTERS_UP = measure({0: 60, 6: 62, 12: 64, 18: 65})
# 72 72 67 69 60 on ticks 0 3 6 9 12, then a rest: steps 0, -, +, -.
MIXED = measure({0: 72, 3: 72, 6: 67, 9: 69, 12: 60, 18: REST})
# One note then silence.
SINGLE = measure({0: 67, 6: REST})
# A whole bar of rest.
SILENT = measure({0: REST})
# Triplet and sixteenth positions of beat 2, falling: 79 77 76 74.
OFFBEATS = measure({0: REST, 7: 79, 8: 77, 10: 76, 11: 74, 12: REST})
# An onset on every tick spanning the whole vocabulary.
EVERY_TICK = np.array([i % CODEC.num_pitches for i in range(24)], np.int32)
EVERY_TICK[1] = 29  # so 55 and 84 both occur

CASES = {
    "quarters_up": (QUARTERS_UP, [(0.20 + 0.67 + 0.25 + 0.67) / 27.79, 5 / 29, 4 / 24, 1.0]),
    "mixed": (MIXED, [(0.20 + 0.5 + 0.67 + 0.5 + 0.25) / 27.79, 12 / 29, 5 / 24, -1 / 4]),
    "single": (SINGLE, [0.20 / 27.79, 0.0, 1 / 24, 0.0]),
    "silent": (SILENT, [0.0, 0.0, 0.0, 0.0]),
    "offbeats": (OFFBEATS, [(1.0 + 2.0 + 2.0 + 1.0) / 27.79, 5 / 29, 4 / 24, -1.0]),
    "every_tick": (EVERY_TICK, [1.0, 1.0, 1.0, None]),
}


def test_metrical_weights_sum_and_shape():
    assert W.shape == (24,)
    assert float(W.sum()) == pytest.approx(attributes.METRICAL_WEIGHT_SUM, abs=1e-4)
    # Downbeat of beat 1 is the cheapest onset, the triplet positions the dearest.
    assert W.argmin() == 0 and W[2] == W[4] == W.max() == 2.0


@pytest.mark.parametrize("name", list(CASES))
def test_hand_computed_values(name):
    tokens, expected = CASES[name]
    got = attributes.compute_all(tokens[None])[0]
    for j, value in enumerate(expected):
        if value is not None:
            assert got[j] == pytest.approx(value, abs=1e-6), attributes.ATTRIBUTE_NAMES[j]


def test_every_tick_contour_counts_each_step():
    # Pitches 55, 84, 57, 58, ... 84, 55, 56: rising everywhere except 55->84 (+), 84->57 (-), 84->55 (-).
    pitches = [int(t) for t in EVERY_TICK]
    signs = np.sign(np.diff(pitches))
    assert attributes.contour(EVERY_TICK)[0] == pytest.approx(signs.mean(), abs=1e-6)


def test_attributes_are_transposition_invariant():
    """Transposing a measure changes no attribute (all four are pitch-class free)."""
    up = np.where(MIXED < CODEC.num_pitches, MIXED + 5, MIXED)
    np.testing.assert_allclose(attributes.compute_all(MIXED[None]), attributes.compute_all(up[None]))


def test_compute_by_name_and_unknown_name():
    batch = np.stack([QUARTERS_UP, MIXED])
    for j, name in enumerate(attributes.ATTRIBUTE_NAMES):
        np.testing.assert_array_equal(attributes.compute(batch, name), attributes.compute_all(batch)[:, j])
        assert attributes.attribute_index(name) == j
    with pytest.raises(ValueError, match="unknown attribute 'tempo'"):
        attributes.compute(batch, "tempo")


def test_ranges_on_random_measures():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, CODEC.vocab_size, (2000, 24))
    values = attributes.compute_all(tokens)
    assert values.dtype == np.float32 and values.shape == (2000, 4)
    assert np.all(values[:, :3] >= 0) and np.all(values[:, :3] <= 1)
    assert np.all(values[:, 3] >= -1) and np.all(values[:, 3] <= 1)


def _tf_values(tokens):
    return attributes.tf_compute_all(tokens.astype(np.int32)).numpy()


def test_tf_matches_numpy_on_hand_cases():
    batch = np.stack([case[0] for case in CASES.values()])
    np.testing.assert_allclose(_tf_values(batch), attributes.compute_all(batch), atol=1e-6)


@pytest.fixture(scope="module")
def corpus_tokens(nottingham_dir):
    """Every kept measure of the whole Nottingham corpus, untransposed (all four attributes are
    transposition invariant, so this covers every distinct value)."""
    from music_attr_vae.data import prepare, sources

    raw = sources.read_raw_tunes(sources.resolve_source(str(nottingham_dir)))
    results = prepare.run_pipeline(raw, prepare.tune_ids(raw), max_shift=0, serialize=False, progress=False)
    tokens = np.concatenate([r.examples.tokens for r in results if r.kept])
    assert len(tokens) > 10_000
    return tokens


def test_tf_matches_numpy_on_every_corpus_measure(corpus_tokens):
    np.testing.assert_allclose(_tf_values(corpus_tokens), attributes.compute_all(corpus_tokens), atol=1e-6)


def test_corpus_attributes_spread_over_their_range(corpus_tokens):
    values = attributes.compute_all(corpus_tokens)
    # Real folk measures use a good part of each attribute's range, not a constant.
    assert np.unique(values[:, 0]).size > 50
    assert values[:, 1].max() > 0.4 and values[:, 1].min() == 0.0
    assert values[:, 2].min() > 0 and values[:, 2].max() >= 8 / 24
    assert values[:, 3].min() == -1.0 and values[:, 3].max() == 1.0
