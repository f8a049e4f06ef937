"""The folk_measures TFDS builder, built offline from local ABC files."""

from __future__ import annotations

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


def _rows(arrays):
    """Sortable rows (tune, bar, shift, tokens, attributes) of expanded examples."""
    return sorted(zip(arrays["tune_id"], np.asarray(arrays["measure_index"]).tolist(),
                      np.asarray(arrays["transposition"]).tolist(),
                      [bytes(t) for t in np.asarray(arrays["tokens"]).astype(np.uint8)],
                      [bytes(a) for a in np.asarray(arrays["attributes"], np.float32)]))


def test_offline_build_matches_prepare(built, prepared_small):
    """Same pipeline, same parameters: the same measures in the same splits as `prepare`, and
    the loader's expansion of the TFDS records gives the same examples as load_arrays."""
    summary = loader.load_summary(str(prepared_small))
    for split in prepare.SPLITS:
        assert built.info.splits[split].num_examples == summary["splits"][split]["measures"]
        batch = next(iter(built.as_dataset(split=split).batch(100_000)))
        expanded = {k: v.numpy() for k, v in loader.expand_measures(dict(batch)).items()}
        assert len(expanded["tokens"]) == summary["splits"][split]["examples"]
        expanded["tune_id"] = [t.decode() for t in expanded["tune_id"]]
        expanded["attributes"] = np.stack([expanded[n] for n in attributes.ATTRIBUTE_NAMES], -1)
        ours = loader.load_arrays(str(prepared_small), split)
        assert _rows(expanded) == _rows(ours)


def test_features_have_the_documented_types(built):
    features = built.info.features
    assert features["tokens"].shape == (24,) and features["tokens"].np_dtype == np.int64
    for name in attributes.ATTRIBUTE_NAMES:
        assert features[name].np_dtype == np.float32
    ex = next(iter(tfds.as_numpy(built.as_dataset(split="train").take(1))))
    assert set(ex) == {"tokens", "tune_id", "measure_index", "transposition", "num_transpositions",
                       *attributes.ATTRIBUTE_NAMES}
    assert 1 <= ex["num_transpositions"] <= 5  # max_shift=2
