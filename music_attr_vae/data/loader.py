"""Prepared TFRecord shards -> ``tf.data`` pipelines and NumPy arrays.

Training reads ``(tokens int32 (B, 24), attributes float32 (B, 4))`` batches
from :func:`make_dataset`; the attribute columns follow
``attributes.ATTRIBUTE_NAMES``.  Evaluation wants whole splits with their
labels (tune, bar, transposition) and uses :func:`load_arrays`.

A record is one measure with the range of its allowed transpositions
(:mod:`.schema`); :func:`expand_measures` turns a parsed batch of records into
every (measure, shift) example, so a split yields exactly the examples that a
copy of every transposition on disk would (``summary.json``'s ``examples``
count), with 12x less to read.  Records of format 1 (one per transposition)
have no ``num_transpositions`` and are read as one example each.

Pipeline order and why: shard files -> interleave (reads shards in parallel)
-> batch of records -> parse (vectorised ``parse_example``) and expand the
transpositions -> cache (when the split is small enough to keep in memory)
-> unbatch -> shuffle (after the cache, so each epoch gets a new order; the
buffer holds the whole split up to ``_MAX_SHUFFLE_BUFFER`` examples, so the
order is a uniform permutation of the examples; unshuffled splits get one
fixed permutation, so a batch never holds just the transpositions of a few
measures) -> repeat -> batch -> prefetch.  Parallelism is fixed and autotuning is off
(``_PARALLELISM``): an autotuned iterator took up to a minute to destroy.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from music_attr_vae.data import attributes

from music_attr_vae.data.codec import CODEC
from music_attr_vae.data.schema import (
    FEATURES,
    MEASURE_INDEX_KEY,
    NUM_TRANSPOSITIONS_KEY,
    SPLITS,
    SUMMARY_FILE,
    TOKENS_KEY,
    TRANSPOSITION_KEY,
    TUNE_ID_KEY,
)

# Splits whose shards together are smaller than this are cached in memory.
CACHE_LIMIT_BYTES = 512 * 1024 * 1024
_MAX_SHUFFLE_BUFFER = 300_000
# Records parsed (and expanded) per vectorised call.
_PARSE_BATCH = 1024
# Parallel reads and parses.  Fixed rather than tf.data.AUTOTUNE: autotuning runs a background
# thread that sleeps for periods doubling from 10 ms up to a minute, and destroying an iterator
# waits for that sleep to end, so every Keras fit/evaluate call (each training epoch) ended up to
# a minute late (a 1-step fit of the paper-size model took 5.11 s, exactly 10 ms x (2^9 - 1), for
# a 2.8 s step).  The pipeline delivers hundreds of times what training consumes without it.
_PARALLELISM = max(1, min(4, os.cpu_count() or 1))
_PREFETCH_BATCHES = 2
# Seed of the one fixed order of unshuffled splits (see _mixed).
_FIXED_ORDER_SEED = 20261129
_DTYPES = {"int64": tf.int64, "float": tf.float32, "bytes": tf.string}


def _feature(key: str) -> tf.io.FixedLenFeature:
    kind, shape = FEATURES[key]
    default = 1 if key == NUM_TRANSPOSITIONS_KEY else None  # format 1: one record per transposition
    return tf.io.FixedLenFeature(list(shape), _DTYPES[kind], default_value=default)


FEATURE_SPEC = {key: _feature(key) for key in FEATURES}
# The training pipeline parses only what it uses.
_TRAIN_SPEC = {k: FEATURE_SPEC[k] for k in (TOKENS_KEY, *attributes.ATTRIBUTE_NAMES, NUM_TRANSPOSITIONS_KEY)}


def expand_measures(parsed: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Parsed records (a batch) -> every allowed transposition of each measure, in record then shift order.

    Example k of a record is its tokens with every pitch token raised by k and
    ``transposition`` + k; the other features are repeated.
    ``num_transpositions`` is dropped from the output.
    """
    counts = tf.cast(parsed[NUM_TRANSPOSITIONS_KEY], tf.int32)
    rows = tf.repeat(tf.range(tf.size(counts)), counts)
    offsets = tf.range(tf.size(rows)) - tf.gather(tf.cumsum(counts, exclusive=True), rows)
    out = {key: tf.gather(value, rows) for key, value in parsed.items() if key != NUM_TRANSPOSITIONS_KEY}
    tokens = tf.cast(out[TOKENS_KEY], tf.int32)
    out[TOKENS_KEY] = tf.where(tokens < CODEC.num_pitches, tokens + offsets[:, None], tokens)
    if TRANSPOSITION_KEY in out:
        out[TRANSPOSITION_KEY] += tf.cast(offsets, tf.int64)
    return out


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def load_summary(data_dir: str) -> dict:
    """The ``summary.json`` of a prepared directory; FileNotFoundError names the missing path."""
    path = os.path.join(str(data_dir), SUMMARY_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {data_dir!r} is not a prepared dataset (run `music-attr-vae prepare` first)"
        )
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None


def shard_files(data_dir: str, split: str) -> List[str]:
    """Sorted shard paths of one split; FileNotFoundError names the directory and the pattern."""
    _check_split(split)
    load_summary(data_dir)
    pattern = os.path.join(str(data_dir), f"{split}.tfrecord-*-of-*")
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no shards for split {split!r} in {data_dir}: nothing matches {pattern}")
    return files


def num_examples(data_dir: str, split: str) -> int:
    """Number of examples of a split, from ``summary.json``."""
    return int(load_summary(data_dir)["splits"][_check_split(split)]["examples"])


def _parse_batch(serialized):
    parsed = expand_measures(tf.io.parse_example(serialized, _TRAIN_SPEC))
    attrs = tf.stack([parsed[name] for name in attributes.ATTRIBUTE_NAMES], axis=-1)
    return parsed[TOKENS_KEY], attrs


def _examples(files: List[str], parse, *, shuffle_files: bool, seed: int, cache: bool) -> tf.data.Dataset:
    """Single expanded examples of the shards, in shard order (``parse``: a batch of records -> examples)."""
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4),
        block_length=16,
        num_parallel_calls=min(len(files), _PARALLELISM),
        deterministic=True,
    )
    ds = ds.batch(_PARSE_BATCH).map(parse, num_parallel_calls=_PARALLELISM, deterministic=True)
    if cache:
        ds = ds.cache()
    return ds.unbatch()


def _mixed(ds: tf.data.Dataset, n_examples: int, seed: int, reshuffle: bool) -> tf.data.Dataset:
    """Shuffle with a buffer of the whole split (at most ``_MAX_SHUFFLE_BUFFER``).

    With ``reshuffle=False`` the order is one fixed permutation (seed ``_FIXED_ORDER_SEED``):
    the transpositions of a measure, adjacent on disk, are spread over the split as the
    format-1 shards spread them, so unshuffled batches (validation) hold many measures.
    """
    buffer = min(max(n_examples, 1), _MAX_SHUFFLE_BUFFER)
    return ds.shuffle(buffer, seed=seed if reshuffle else _FIXED_ORDER_SEED, reshuffle_each_iteration=reshuffle)


def make_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    *,
    shuffle: Optional[bool] = None,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool = False,
    cache: Optional[bool] = None,
) -> tf.data.Dataset:
    """Batches of ``(tokens int32 (B, 24), attributes float32 (B, 4))`` of one split.

    ``shuffle`` defaults to True for ``train`` only; the order is
    deterministic for a given ``seed`` (shards and examples are reshuffled
    each epoch, reproducibly).  Without shuffling, every epoch has the same
    fixed order, the order of :func:`load_arrays`.  ``cache`` defaults to
    caching splits below ``CACHE_LIMIT_BYTES``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    files = shard_files(data_dir, split)
    if shuffle is None:
        shuffle = split == "train"
    if cache is None:
        cache = sum(os.path.getsize(f) for f in files) <= CACHE_LIMIT_BYTES

    ds = _examples(files, _parse_batch, shuffle_files=shuffle and not cache, seed=seed, cache=cache)
    ds = _mixed(ds, num_examples(data_dir, split), seed, reshuffle=shuffle)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    return without_autotune(ds.prefetch(_PREFETCH_BATCHES))


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` with tf.data's autotuning off (see ``_PARALLELISM``): its iterators are destroyed at once."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def load_arrays(data_dir: str, split: str) -> Dict[str, np.ndarray]:
    """A whole split as NumPy arrays, every transposition expanded, in the fixed order of an
    unshuffled :func:`make_dataset` (shard order, then one seeded permutation).

    Keys: ``tokens`` (N, 24) int32, ``attributes`` (N, 4) float32,
    ``tune_id`` (N,) str, ``measure_index`` (N,) int64, ``transposition`` (N,) int64.
    """
    files = shard_files(data_dir, split)
    ds = _examples(files, lambda s: expand_measures(tf.io.parse_example(s, FEATURE_SPEC)), shuffle_files=False,
                   seed=0, cache=False)
    ds = _mixed(ds, num_examples(data_dir, split), 0, reshuffle=False).batch(8192)
    parts: Dict[str, list] = {k: [] for k in FEATURE_SPEC if k != NUM_TRANSPOSITIONS_KEY}
    for batch in ds.as_numpy_iterator():
        for key, value in batch.items():
            parts[key].append(value)

    def cat(key, shape, dtype):
        return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.zeros(shape, dtype)

    n_ticks = CODEC.ticks_per_measure
    attrs = [cat(name, (0,), np.float32) for name in attributes.ATTRIBUTE_NAMES]
    tune_ids = cat(TUNE_ID_KEY, (0,), object)
    return {
        "tokens": cat(TOKENS_KEY, (0, n_ticks), np.int32),
        "attributes": np.stack(attrs, axis=-1).astype(np.float32),
        "tune_id": np.array([t.decode("utf-8") for t in tune_ids], dtype=str),
        "measure_index": cat(MEASURE_INDEX_KEY, (0,), np.int64),
        "transposition": cat(TRANSPOSITION_KEY, (0,), np.int64),
    }
