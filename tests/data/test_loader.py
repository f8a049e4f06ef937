"""loader: tf.data pipelines and NumPy arrays from the prepared small corpus."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.data import attributes, loader

from music_attr_vae.data.codec import CODEC


def _collect(ds):
    tokens, attrs = zip(*[(t.numpy(), a.numpy()) for t, a in ds])
    return np.concatenate(tokens), np.concatenate(attrs)


def _rows(tokens):
    """The multiset of token rows, comparable across orders."""
    return sorted(map(bytes, np.asarray(tokens, np.uint8)))


def test_batches_have_the_contract_dtypes_and_shapes(prepared_small):
    ds = loader.make_dataset(str(prepared_small), "train", 32, drop_remainder=True)
    tokens_spec, attrs_spec = ds.element_spec
    assert tokens_spec.dtype == tf.int32 and tokens_spec.shape.as_list() == [32, CODEC.ticks_per_measure]
    assert attrs_spec.dtype == tf.float32 and attrs_spec.shape.as_list() == [32, len(attributes.ATTRIBUTE_NAMES)]
    tokens, attrs = next(iter(ds))
    assert tokens.shape == (32, 24) and attrs.shape == (32, 4)
    # Columns follow ATTRIBUTE_NAMES: they equal the attributes recomputed from the tokens.
    np.testing.assert_allclose(attrs.numpy(), attributes.compute_all(tokens.numpy()), atol=1e-6)


def test_unshuffled_batches_mix_many_measures(prepared_small):
    """The fixed order of an unshuffled split spreads a measure's transpositions (adjacent on disk)."""
    arrays = loader.load_arrays(str(prepared_small), "validation")
    keys = list(zip(arrays["tune_id"], arrays["measure_index"].tolist()))
    first = keys[:64]
    assert len(set(first)) > 40  # 64 examples from > 40 measures, not ~13 measures x 5 shifts
    assert sum(a == b for a, b in zip(keys, keys[1:])) < 0.05 * len(keys)


def test_one_epoch_reads_every_example_once(prepared_small):
    arrays = loader.load_arrays(str(prepared_small), "validation")
    assert len(arrays["tokens"]) == loader.num_examples(str(prepared_small), "validation")
    # Validation is not shuffled by default: same order as load_arrays; the last batch is partial.
    tokens, attrs = _collect(loader.make_dataset(str(prepared_small), "validation", 100))
    np.testing.assert_array_equal(tokens, arrays["tokens"])
    np.testing.assert_array_equal(attrs, arrays["attributes"])
    # Shuffled train: a permutation of the split.
    train = loader.load_arrays(str(prepared_small), "train")
    shuffled, _ = _collect(loader.make_dataset(str(prepared_small), "train", 256))
    assert len(shuffled) == len(train["tokens"])
    assert not np.array_equal(shuffled, train["tokens"])
    assert _rows(shuffled) == _rows(train["tokens"])


def test_shuffle_is_seeded_and_reshuffles_each_epoch(prepared_small):
    def first_batch(seed):
        return next(iter(loader.make_dataset(str(prepared_small), "train", 64, seed=seed)))[0].numpy()

    np.testing.assert_array_equal(first_batch(0), first_batch(0))
    assert not np.array_equal(first_batch(0), first_batch(1))
    ds = loader.make_dataset(str(prepared_small), "train", 512, seed=0)
    epoch1, _ = _collect(ds)
    epoch2, _ = _collect(ds)
    assert not np.array_equal(epoch1, epoch2)
    assert _rows(epoch1) == _rows(epoch2)


def test_repeat_goes_past_one_epoch(prepared_small):
    n = loader.num_examples(str(prepared_small), "test")
    ds = loader.make_dataset(str(prepared_small), "test", 16, repeat=True, drop_remainder=True)
    seen = sum(int(t.shape[0]) for t, _ in ds.take(n // 16 + 3))
    assert seen > n


def test_load_arrays_labels(prepared_small):
    arrays = loader.load_arrays(str(prepared_small), "train")
    n = len(arrays["tokens"])
    assert arrays["tokens"].dtype == np.int32 and arrays["tokens"].shape == (n, 24)
    assert arrays["attributes"].dtype == np.float32 and arrays["attributes"].shape == (n, 4)
    assert arrays["tune_id"].shape == (n,) and arrays["tune_id"].dtype.kind == "U"
    assert all("#" in t for t in arrays["tune_id"][:100])
    assert arrays["measure_index"].min() >= 0
    assert set(np.unique(arrays["transposition"])) <= set(range(-2, 3))
    assert arrays["tokens"].min() >= 0 and arrays["tokens"].max() < CODEC.vocab_size
    # A measure never starts with HOLD in the data (ties are re-struck on tick 0).
    assert not np.any(arrays["tokens"][:, 0] == CODEC.hold)


def test_clear_errors_name_the_path(prepared_small, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"summary\.json"):
        loader.make_dataset(str(tmp_path), "train", 8)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        loader.make_dataset(str(prepared_small), "dev", 8)
    with pytest.raises(ValueError, match="batch_size"):
        loader.make_dataset(str(prepared_small), "train", 0)
    # A directory whose test shards are missing.
    partial = tmp_path / "partial"
    shutil.copytree(prepared_small, partial)
    for shard in partial.glob("test.tfrecord-*"):
        shard.unlink()
    with pytest.raises(FileNotFoundError, match=rf"no shards for split 'test' in {partial}"):
        loader.load_arrays(str(partial), "test")
    assert len(loader.load_arrays(str(partial), "validation")["tokens"]) > 0


def test_format_1_folders_are_read_as_one_example_per_record(prepared_small, tmp_path):
    """Shards written one record per transposition (format 1, no num_transpositions) still load."""
    import json

    from music_attr_vae.data import prepare

    arrays = loader.load_arrays(str(prepared_small), "test")
    old = tmp_path / "v1"
    old.mkdir()
    with tf.io.TFRecordWriter(str(old / "test.tfrecord-00000-of-00001")) as writer:
        for i in range(len(arrays["tokens"])):
            feature = {
                "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=arrays["tokens"][i].tolist())),
                "tune_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[arrays["tune_id"][i].encode()])),
                "measure_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[arrays["measure_index"][i]])),
                "transposition": tf.train.Feature(int64_list=tf.train.Int64List(value=[arrays["transposition"][i]])),
                **{name: tf.train.Feature(float_list=tf.train.FloatList(value=[arrays["attributes"][i, j]]))
                   for j, name in enumerate(attributes.ATTRIBUTE_NAMES)},
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    summary = {"format_version": 1, "splits": {s: {"examples": 0, "shards": []} for s in prepare.SPLITS}}
    summary["splits"]["test"] = {"examples": len(arrays["tokens"]), "shards": ["test.tfrecord-00000-of-00001"]}
    (old / "summary.json").write_text(json.dumps(summary))
    assert prepare.is_prepared_dir(str(old))
    again = loader.load_arrays(str(old), "test")

    def labelled(a):
        return sorted(zip(a["tune_id"], a["measure_index"].tolist(), a["transposition"].tolist(),
                          map(bytes, a["tokens"].astype(np.uint8)), map(bytes, a["attributes"])))

    assert labelled(again) == labelled(arrays)
    tokens, _ = _collect(loader.make_dataset(str(old), "test", 64))
    assert _rows(tokens) == _rows(arrays["tokens"])


def test_train_resolves_a_list_of_sources_once(small_abc_dir, nottingham_dir, tmp_path):
    """`train --source=A,B` prepares both into DIR/data and reuses it when resuming with the same list."""
    from music_attr_vae import run_data
    from music_attr_vae.configs_loader import load_config

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(nottingham_dir / "reelsa-c.abc", other / "reelsa-c.abc")
    config = load_config("quick")
    source = f"{small_abc_dir},{other}"
    (tmp_path / "run").mkdir()  # train() makes the workdir before it resolves the data
    data_dir, summary = run_data.resolve_data(config, str(tmp_path / "run"), source, progress=False)
    assert data_dir == str(tmp_path / "run" / "data")
    assert [e["label"] for e in summary["per_source"]] == [small_abc_dir.name, "other"]
    assert all(e["kept_tunes"] > 0 for e in summary["per_source"])
    again, _ = run_data.resolve_data(config, str(tmp_path / "run"), source, progress=False)
    assert again == data_dir
    with pytest.raises(ValueError, match="was prepared from --source"):
        run_data.resolve_data(config, str(tmp_path / "run"), str(small_abc_dir), progress=False)
