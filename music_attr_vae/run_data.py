"""Where a training run's measures come from, and how many steps they make.

:func:`resolve_data` turns ``--source`` into a prepared folder (used as is, or
prepared once into ``WORKDIR/data`` and reused on resume);
:func:`epoch_dataset` gives the batches of one epoch in an order that depends
only on (seed, epoch), so a resumed run sees the same batches;
:func:`validation_dataset` and :func:`reference_tokens` feed the per-epoch
validation and latent image; :func:`total_steps` is the step budget with clear
errors for an empty split or a batch the replicas cannot share.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from music_attr_vae import workdir as wd
from music_attr_vae.data import loader
from music_attr_vae.data import prepare as prepare_mod


def resolve_data(
    config, workdir: str, source: Optional[str], *, scratch: Optional[str] = None, progress=True,
    cache_dir: Optional[str] = None, allow_unverified_download: bool = False,
):
    """The prepared data dir for this run and its summary.

    ``source`` (or ``config.data.source``, else ``folk_rnn``) is used as is
    when it is a prepared folder (has summary.json); otherwise it is prepared
    once into DIR/data (or ``scratch`` for non-chief workers) and reused when
    resuming.  Offline, the folk_rnn default fails with a message naming --source.
    """
    source = source or config.data.source or "folk_rnn"
    out = scratch or wd.path(workdir, wd.DATA_DIR)
    if prepare_mod.is_prepared_dir(out) and not prepare_mod.is_prepared_dir(source):
        summary = prepare_mod.read_summary(out)
        before = (summary.get("parameters") or {}).get("source")
        if before is not None and before != source:
            raise ValueError(
                f"--workdir={workdir} was prepared from --source={before!r}, not {source!r}; "
                "use a new --workdir (or the same --source to resume)"
            )
        summary["data_dir"] = out
        return out, summary
    try:
        summary = prepare_mod.prepare(
            source, out, max_shift=config.data.max_shift, seed=config.data.seed, progress=progress,
            cache_dir=cache_dir, allow_unverified_download=allow_unverified_download,
        )
    except Exception as err:
        if source == "folk_rnn" and "--source" not in str(err):
            raise RuntimeError(
                f"could not get the default folk-rnn corpus ({err}); pass --source=<ABC/MIDI file, folder or glob, "
                "or a folder prepared by `music-attr-vae prepare`>"
            ) from err
        raise
    return summary["data_dir"], summary


def split_size(data_dir: str, split: str) -> int:
    try:
        return loader.num_examples(data_dir, split)
    except (KeyError, FileNotFoundError):
        return 0


def epoch_dataset(data_dir: str, config, epoch: int, skip: int, multi_worker: bool):
    """Batches of epoch ``epoch`` from batch ``skip`` on: the order depends only on (seed, epoch)."""
    seed = (config.train.seed * 1_000_003 + epoch) % (2**31 - 1)
    ds = loader.make_dataset(
        data_dir, "train", config.train.batch_size, shuffle=True, seed=seed, drop_remainder=True
    )
    return for_strategy(ds.skip(skip), multi_worker)


def pack(tokens: tf.Tensor, attributes: tf.Tensor) -> tf.Tensor:
    """One float32 tensor (B, 24 + 4) holding a batch's tokens and attributes (see ``MeasureVAE.unpack``)."""
    return tf.concat([tf.cast(tokens, tf.float32), tf.cast(attributes, tf.float32)], axis=1)


def for_strategy(ds: tf.data.Dataset, multi_worker: bool) -> tf.data.Dataset:
    """The dataset as the strategy needs it: for several workers, sharded by data and packed (:func:`pack`)."""
    if not multi_worker:
        return ds
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).map(pack)


def validation_dataset(data_dir: str, config, multi_worker: bool):
    """(dataset, batches) of the validation split, at most ``data.validation_size`` measures; (None, 0) if empty."""
    n = split_size(data_dir, "validation")
    if config.data.validation_size:
        n = min(n, config.data.validation_size)
    if n == 0:
        return None, 0
    batches = math.ceil(n / config.train.batch_size)
    ds = loader.make_dataset(data_dir, "validation", config.train.batch_size, shuffle=False).take(batches)
    return for_strategy(ds, multi_worker), batches


def reference_tokens(data_dir: str) -> Optional[np.ndarray]:
    """Test measures (validation when the test split is empty), for the export's maps and the epoch image."""
    for split in ("test", "validation"):
        if split_size(data_dir, split):
            return loader.load_arrays(data_dir, split)["tokens"]
    return None


# ---------------------------------------------------------------- optimizer


def total_steps(data_dir: str, config, num_replicas: int) -> Tuple[int, int]:
    """(steps per epoch, total steps); clear errors for an empty split or an unsplittable batch."""
    batch = config.train.batch_size
    if batch % num_replicas:
        raise ValueError(
            f"config.train.batch_size={batch} is not divisible by the {num_replicas} replicas of the strategy"
        )
    n_train = split_size(data_dir, "train")
    if n_train == 0:
        raise ValueError(f"the training split of {data_dir} is empty: no usable 4/4 measures in the source")
    full = n_train // batch
    if full == 0:
        raise ValueError(
            f"the training split of {data_dir} has {n_train} measures, fewer than one batch of {batch}; "
            "lower --config.train.batch_size"
        )
    steps = min(full, config.train.steps_per_epoch) if config.train.steps_per_epoch else full
    return steps, steps * config.train.epochs
