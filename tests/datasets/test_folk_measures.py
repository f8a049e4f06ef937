"""The folk_measures TFDS builder, built offline from local ABC files."""

from __future__ import annotations

import collections

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from datasets.folk_measures import folk_measures_dataset_builder as fm  # noqa: E402
from music_attr_vae.data import attributes, loader, prepare  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_abc_dir):
    config = fm.FolkMeasuresConfig(name="local_shift2", source="local", max_shift=2, seed=0)
    builder = fm.Builder(config=config, data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(small_abc_dir)))
    return builder


def test_builder_configs():
    names = [c.name for c in fm.Builder.BUILDER_CONFIGS]
    assert names == ["folk_rnn", "local"]
    assert fm.Builder.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_offline_build_matches_prepare(built, prepared_small):
    """Same pipeline, same parameters: the same examples in the same splits as `prepare`."""
    summary = loader.load_summary(str(prepared_small))
    for split in prepare.SPLITS:
        assert built.info.splits[split].num_examples == summary["splits"][split]["examples"]
        ours = loader.load_arrays(str(prepared_small), split)
        theirs = collections.defaultdict(list)
        for ex in tfds.as_numpy(built.as_dataset(split=split)):
            theirs["tune_id"].append(ex["tune_id"].decode())
            theirs["key"].append((ex["tune_id"].decode(), int(ex["measure_index"]), int(ex["transposition"])))
            theirs["tokens"].append(ex["tokens"])
            theirs["attributes"].append([ex[name] for name in attributes.ATTRIBUTE_NAMES])
        assert set(theirs["tune_id"]) == set(ours["tune_id"])
        order_ours = sorted(range(len(ours["tokens"])), key=lambda i: (
            ours["tune_id"][i], ours["measure_index"][i], ours["transposition"][i]))
        order_theirs = sorted(range(len(theirs["key"])), key=lambda i: theirs["key"][i])
        np.testing.assert_array_equal(
            np.array(theirs["tokens"])[order_theirs], ours["tokens"][order_ours].astype(np.int64))
        np.testing.assert_allclose(
            np.array(theirs["attributes"], np.float32)[order_theirs], ours["attributes"][order_ours], atol=1e-7)


def test_features_have_the_documented_types(built):
    features = built.info.features
    assert features["tokens"].shape == (24,) and features["tokens"].np_dtype == np.int64
    for name in attributes.ATTRIBUTE_NAMES:
        assert features[name].np_dtype == np.float32
    ex = next(iter(tfds.as_numpy(built.as_dataset(split="train").take(1))))
    assert set(ex) == {"tokens", "tune_id", "measure_index", "transposition", *attributes.ATTRIBUTE_NAMES}
