"""Train a MeasureVAE: data, distribution strategy, checkpoints/resume, logs, export.

``train(config, workdir, source=None, strategy="auto")`` runs (or resumes) one
experiment in ``workdir``::

    DIR/config.json          the resolved config + "data_dir" (the prepared shards) + "run" info
    DIR/data/                shards prepared on the fly (when --source is not a prepared dir)
    DIR/checkpoints/         tf.train checkpoints: model, optimizer, epoch and step-in-epoch
    DIR/tensorboard/{train,validation}/
    DIR/history.jsonl        one JSON line per event (start/resume, epoch, NaN stop, export)
    DIR/saved_model/         the exported SavedModel (music_attr_vae.export)

**Resuming.**  The data order of epoch ``e`` is a pure function of
(``train.seed``, ``e``) and the model's noise of step ``n`` a pure function of
(``train.seed``, ``n``, replica), so a run restored from a checkpoint taken
after ``k`` steps of epoch ``e`` rebuilds epoch ``e``'s order, skips its first
``k`` batches and continues exactly as the uninterrupted run would have.
Checkpoints are written at every epoch end and every
``train.checkpoint_every_steps`` steps; ``CheckpointManager`` updates its
index file atomically, so a SIGKILL during a save leaves the previous
checkpoint in place.

**Strategies.**  ``auto`` picks ``MirroredStrategy`` over all GPUs when there
are any and the default (single-device) strategy otherwise; ``default``,
``mirrored`` and ``multi_worker`` (``MultiWorkerMirroredStrategy`` from
``TF_CONFIG``) force one.  ``train.batch_size`` is the *global* batch; Keras
splits each batch across the replicas.  With one replica the whole train
step is XLA-compiled; with several, only each replica's loss-and-gradient
computation is (the gradient all-reduce stays outside XLA).  Under
``multi_worker`` only the chief writes logs, the config and the SavedModel;
every worker takes part in checkpoint saves (the other workers write to a
scratch folder they delete), as ``tf.distribute`` requires.

**Failures.**  A non-finite loss stops the run with ``NonFiniteLossError``;
the checkpoint of that step is not written, so the last good one stays the
latest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from music_attr_vae import configs_loader
from music_attr_vae.data import attributes as attrs
from music_attr_vae.model.vae import MeasureVAE, build_model

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_DIR = "checkpoints"
SAVED_MODEL_DIR = "saved_model"
# Config sections that define the network: resuming with different values is refused.
_ARCHITECTURE_SECTIONS = ("model", "regularization")
# Extra top-level keys of config.json that are not config fields.
_RUN_KEYS = ("data_dir", "run")
IMAGE_MEASURES = 2000


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the last good checkpoint is kept."""


# ---------------------------------------------------------------- small helpers


def _write_json_atomic(path: str, data) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _log_event(workdir: str, event: str, **fields) -> None:
    record = {"event": event, "time": time.time(), **fields}
    with open(os.path.join(workdir, HISTORY_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _say(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)


def read_history(workdir: str) -> List[dict]:
    """The events of DIR/history.jsonl, oldest first."""
    path = os.path.join(workdir, HISTORY_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- strategy


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The distribution strategy for ``--strategy`` (see the module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r} is not one of {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable (cluster and task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and tf.config.list_physical_devices("GPU")):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _worker_role(strategy) -> Tuple[bool, int]:
    """(is_chief, task id) of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    task_id = int(getattr(resolver, "task_id", 0) or 0)
    if task_type in (None, "chief"):
        return True, task_id
    has_chief = "chief" in (resolver.cluster_spec().as_dict() if resolver else {})
    return (task_type == "worker" and task_id == 0 and not has_chief), task_id


def _multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


# ---------------------------------------------------------------- workdir and data


def _prepare_workdir(workdir: str) -> str:
    if not workdir:
        raise ValueError("--workdir is required")
    workdir = os.path.abspath(workdir)
    parent = os.path.dirname(workdir)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--workdir={workdir}: its parent folder {parent} does not exist")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise NotADirectoryError(f"--workdir={workdir} exists and is not a folder")
    os.makedirs(workdir, exist_ok=True)
    return workdir


def read_workdir_config(workdir: str) -> Tuple[dict, dict]:
    """(config fields, run fields) from DIR/config.json."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir} is not a training workdir")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    run = {k: data.pop(k) for k in _RUN_KEYS if k in data}
    return data, run


def _flat(d: dict, prefix: str = "") -> Dict[str, object]:
    out: Dict[str, object] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_resume_compatible(workdir: str, config) -> None:
    """Refuse to resume a workdir whose network differs from ``config``'s."""
    if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        return
    old, _ = read_workdir_config(workdir)
    new = configs_loader.to_dict(config)
    old_flat = _flat({k: old.get(k, {}) for k in _ARCHITECTURE_SECTIONS})
    new_flat = _flat({k: new.get(k, {}) for k in _ARCHITECTURE_SECTIONS})
    diffs = [
        f"{key}: {old_flat.get(key)!r} -> {new_flat.get(key)!r}"
        for key in sorted(set(old_flat) | set(new_flat))
        if old_flat.get(key) != new_flat.get(key)
    ]
    if diffs:
        raise ValueError(
            f"--workdir={workdir} holds a run of a different network ({'; '.join(diffs)}); "
            "use a new --workdir, or the same config to resume"
        )


def resolve_data(
    config, workdir: str, source: Optional[str], *, scratch: Optional[str] = None, progress=True,
    cache_dir: Optional[str] = None,
):
    """The prepared data dir for this run and its summary.

    ``source`` (or ``config.data.source``, else ``folk_rnn``) is used as is
    when it is a prepared folder (has summary.json); otherwise it is prepared
    once into DIR/data (or ``scratch`` for non-chief workers) and reused when
    resuming.  Offline, the folk_rnn default fails with a message naming --source.
    """
    from music_attr_vae.data import prepare as prepare_mod

    source = source or config.data.source or "folk_rnn"
    out = scratch or os.path.join(workdir, "data")
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
            cache_dir=cache_dir,
        )
    except Exception as err:
        if source == "folk_rnn" and "--source" not in str(err):
            raise RuntimeError(
                f"could not get the default folk-rnn corpus ({err}); pass --source=<ABC/MIDI file, folder or glob, "
                "or a folder prepared by `music-attr-vae prepare`>"
            ) from err
        raise
    return summary["data_dir"], summary


def _split_size(data_dir: str, split: str) -> int:
    from music_attr_vae.data import loader

    try:
        return loader.num_examples(data_dir, split)
    except (KeyError, FileNotFoundError):
        return 0


def _epoch_dataset(data_dir: str, config, epoch: int, skip: int, multi_worker: bool):
    """Batches of epoch ``epoch`` from batch ``skip`` on: the order depends only on (seed, epoch)."""
    from music_attr_vae.data import loader

    seed = (config.train.seed * 1_000_003 + epoch) % (2**31 - 1)
    ds = loader.make_dataset(
        data_dir, "train", config.train.batch_size, shuffle=True, seed=seed, drop_remainder=True
    )
    ds = ds.skip(skip)
    if multi_worker:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds


def _validation_dataset(data_dir: str, config, multi_worker: bool):
    """(dataset, batches) of the validation split, at most ``data.validation_size`` measures; (None, 0) if empty."""
    from music_attr_vae.data import loader

    n = _split_size(data_dir, "validation")
    if config.data.validation_size:
        n = min(n, config.data.validation_size)
    if n == 0:
        return None, 0
    batches = math.ceil(n / config.train.batch_size)
    ds = loader.make_dataset(data_dir, "validation", config.train.batch_size, shuffle=False).take(batches)
    if multi_worker:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds, batches


def _reference_tokens(data_dir: str) -> Optional[np.ndarray]:
    """Test measures (validation when the test split is empty), for the export's maps and the epoch image."""
    from music_attr_vae.data import loader

    for split in ("test", "validation"):
        if _split_size(data_dir, split):
            return loader.load_arrays(data_dir, split)["tokens"]
    return None


# ---------------------------------------------------------------- optimizer


def build_optimizer(config, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay), optional warm-up and cosine decay, optional global clipnorm."""
    t = config.train
    lr = t.learning_rate
    if t.lr_schedule == "cosine":
        decay_steps = max(1, total_steps - t.lr_warmup_steps)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if t.lr_warmup_steps else t.learning_rate,
            decay_steps=decay_steps,
            alpha=t.lr_final_fraction,
            warmup_target=t.learning_rate if t.lr_warmup_steps else None,
            warmup_steps=t.lr_warmup_steps,
        )
    elif t.lr_warmup_steps:
        lr = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=t.learning_rate, warmup_steps=t.lr_warmup_steps
        )
    kwargs = {"learning_rate": lr}
    if t.clipnorm:
        kwargs["global_clipnorm"] = t.clipnorm
    if t.weight_decay:
        return keras.optimizers.AdamW(weight_decay=t.weight_decay, **kwargs)
    return keras.optimizers.Adam(**kwargs)


# ---------------------------------------------------------------- callbacks


@dataclasses.dataclass
class _Position:
    """Where the run is: the epoch, the batches of it already done, the global step."""

    epoch: int
    done_in_epoch: int
    steps_per_epoch: int
    start_step: int


class _NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.bad: Optional[Tuple[int, float]] = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.bad = (int(self.model.optimizer.iterations.numpy()), float(loss))
            self.model.stop_training = True


class _StepCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint every N global steps (never after a non-finite loss)."""

    def __init__(self, save, every: int, nan_guard: _NanGuard):
        super().__init__()
        self.save, self.every, self.nan_guard = save, every, nan_guard

    def on_train_batch_end(self, batch, logs=None):
        if self.every and self.nan_guard.bad is None:
            step = int(self.model.optimizer.iterations.numpy())
            if step % self.every == 0:
                self.save(batch + 1)


class _TimeBudget(keras.callbacks.Callback):
    """Stops training once ``seconds`` of training have passed (0 = never)."""

    def __init__(self, seconds: float, already: float = 0.0):
        super().__init__()
        self.seconds, self.already = seconds, already
        self.exhausted = False
        self._start: Optional[float] = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.already = self.used()
        self._start = None

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds and self.used() >= self.seconds:
            self.exhausted = True
            self.model.stop_training = True

    def used(self) -> float:
        """Seconds spent inside ``fit`` so far, over every run of this workdir."""
        return self.already + (time.perf_counter() - self._start if self._start is not None else 0.0)


class _ScalarLogger(keras.callbacks.Callback):
    """Training scalars to TensorBoard every ``every`` steps (running means of the epoch)."""

    def __init__(self, writer, every: int, batch_size: int):
        super().__init__()
        self.writer, self.every, self.batch_size = writer, every, batch_size
        self._last = None

    def on_train_begin(self, logs=None):
        self._last = (time.perf_counter(), int(self.model.optimizer.iterations.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.writer is None or step % self.every:
            return
        now = time.perf_counter()
        rate = (step - self._last[1]) * self.batch_size / max(now - self._last[0], 1e-9)
        self._last = (now, step)
        with self.writer.as_default(step=step):
            for key, value in (logs or {}).items():
                tf.summary.scalar(key, value)
            tf.summary.scalar("examples_per_second", rate)


class _ProgressBar(keras.callbacks.Callback):
    """A tqdm bar per epoch showing loss, token accuracy and examples/s."""

    def __init__(self, position: _Position, epochs: int, batch_size: int, enabled: bool):
        super().__init__()
        self.position, self.epochs, self.batch_size, self.enabled = position, epochs, batch_size, enabled
        self.bar = None

    def on_train_begin(self, logs=None):
        if not self.enabled:
            return
        from tqdm import tqdm

        p = self.position
        self.bar = tqdm(
            total=p.steps_per_epoch,
            initial=p.done_in_epoch,
            desc=f"epoch {p.epoch + 1}/{self.epochs}",
            unit="step",
            file=sys.stderr,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        self._t0, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is None:
            return
        self._n += 1
        rate = self._n * self.batch_size / max(time.perf_counter() - self._t0, 1e-9)
        logs = logs or {}
        self.bar.set_postfix(
            loss=f"{logs.get('loss', float('nan')):.4f}",
            acc=f"{logs.get('accuracy', float('nan')):.4f}",
            ex_s=f"{rate:.0f}",
            refresh=False,
        )
        self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------- epoch image


def latent_figure_png(z: np.ndarray, attribute_values: np.ndarray, dims: Dict[str, int], title: str) -> np.ndarray:
    """A PNG (H, W, 4 uint8) of test latents: per attribute, its dim vs a neighbour dim, coloured by the attribute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dims or {name: i for i, name in enumerate(attrs.ATTRIBUTE_NAMES[:2])}
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, (name, dim) in zip(axes[0], panels.items()):
        other = (dim + 1) % z.shape[1]
        points = ax.scatter(
            z[:, dim], z[:, other], c=attribute_values[:, attrs.attribute_index(name)], s=4, cmap="viridis"
        )
        ax.set_xlabel(f"z[{dim}]")
        ax.set_ylabel(f"z[{other}]")
        ax.set_title(name.replace("_", " "))
        fig.colorbar(points, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return image


def _write_latent_image(model: MeasureVAE, config, tokens: Optional[np.ndarray], writer, step: int, epoch: int):
    if tokens is None or writer is None:
        return
    tokens = tokens[:IMAGE_MEASURES]
    z = np.concatenate([model.encode(tokens[i : i + 512])[0].numpy() for i in range(0, len(tokens), 512)])
    dims = {name: int(spec["dim"]) for name, spec in (config.regularization or {}).items()}
    label = "regularised dims" if dims else "dims 0-1 (not regularised)"
    image = latent_figure_png(z, attrs.compute_all(tokens), dims, f"{config.name}: test latents, {label}, epoch {epoch}")
    with writer.as_default(step=step):
        tf.summary.image("test_latents", image[None], step=step)


# ---------------------------------------------------------------- the run


def _total_steps(data_dir: str, config, num_replicas: int) -> Tuple[int, int]:
    """(steps per epoch, total steps); clear errors for an empty split or an unsplittable batch."""
    batch = config.train.batch_size
    if batch % num_replicas:
        raise ValueError(
            f"config.train.batch_size={batch} is not divisible by the {num_replicas} replicas of the strategy"
        )
    n_train = _split_size(data_dir, "train")
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


def _write_config(workdir: str, config, data_dir: str, run: dict) -> None:
    data = configs_loader.to_dict(config)
    data["data_dir"] = os.path.abspath(data_dir)
    data["run"] = run
    _write_json_atomic(os.path.join(workdir, CONFIG_FILE), data)


def _plain_copy(model: MeasureVAE, config, strategy) -> MeasureVAE:
    """The model outside any strategy (for export): the same weights in ordinary variables."""
    if strategy is tf.distribute.get_strategy():  # the default strategy: variables are ordinary already
        return model
    plain = build_model(config)
    plain.set_weights(model.get_weights())
    return plain


def train(
    config, workdir: str, source: Optional[str] = None, strategy: str = "auto", *,
    progress: bool = True, cache_dir: Optional[str] = None,
) -> dict:
    """Train (or resume) ``config`` in ``workdir``; returns a summary dict.

    Keys: workdir, data_dir, steps, epochs_done, resumed_from_step, stopped
    ('completed' | 'time_budget'), train_seconds (inside ``fit``, over all
    runs of the workdir), examples_per_second (this call's steps over its
    time inside ``fit``, compilation included), validation (the last epoch's
    metrics), saved_model (path or None).
    """
    configs_loader.validate_config(config)
    strat = make_strategy(strategy) if isinstance(strategy, str) else strategy
    strategy_name = strategy if isinstance(strategy, str) else type(strategy).__name__
    workdir = _prepare_workdir(workdir)
    is_chief, task_id = _worker_role(strat)
    multi = _multi_worker(strat)
    scratch = None if is_chief else os.path.join(workdir, f".worker-{task_id}")
    if scratch:
        os.makedirs(scratch, exist_ok=True)
    if is_chief:
        _check_resume_compatible(workdir, config)
    keras.utils.set_random_seed(config.train.seed)

    data_dir, _ = resolve_data(
        config, workdir, source, scratch=os.path.join(scratch, "data") if scratch else None,
        progress=progress and is_chief, cache_dir=cache_dir,
    )
    replicas = strat.num_replicas_in_sync
    steps_per_epoch, total_steps = _total_steps(data_dir, config, replicas)
    if is_chief:
        _write_config(
            workdir, config, data_dir,
            {"source": source or config.data.source or "folk_rnn", "strategy": strategy_name, "replicas": replicas},
        )

    with strat.scope():
        model = build_model(config)
        optimizer = build_optimizer(config, total_steps)
        optimizer.build(model.trainable_variables)
        whole_step_jit = config.train.jit_compile and replicas == 1
        model.jit_inner = config.train.jit_compile and replicas > 1
        model.compile(optimizer=optimizer, jit_compile=whole_step_jit)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    done_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
    seconds_var = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, epoch=epoch_var, step_in_epoch=done_var, train_seconds=seconds_var
    )
    chief_ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
    ckpt_dir = chief_ckpt_dir if is_chief else os.path.join(scratch, CHECKPOINT_DIR)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.train.keep_checkpoints)
    latest = tf.train.latest_checkpoint(chief_ckpt_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    start_step = int(optimizer.iterations.numpy())
    epoch, done = int(epoch_var.numpy()), int(done_var.numpy())
    if is_chief:
        _log_event(workdir, "resume" if latest else "start", step=start_step, epoch=epoch, step_in_epoch=done,
                   checkpoint=latest, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
        _say(("resuming from step %d (epoch %d, batch %d)" % (start_step, epoch + 1, done)) if latest
             else f"training {config.name}: {config.train.epochs} epochs x {steps_per_epoch} steps of {config.train.batch_size}")

    writers = {}
    if is_chief:
        writers = {
            split: tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", split))
            for split in ("train", "validation")
        }

    def save(done_in_epoch: int, epoch_now: int) -> None:
        epoch_var.assign(epoch_now)
        done_var.assign(done_in_epoch)
        seconds_var.assign(budget.used())
        manager.save(checkpoint_number=int(optimizer.iterations.numpy()))

    val_ds, val_batches = _validation_dataset(data_dir, config, multi)
    ref_tokens = _reference_tokens(data_dir) if is_chief else None
    budget = _TimeBudget(config.train.max_minutes * 60.0, already=float(seconds_var.numpy()))
    stopped = "completed"
    val_logs: Dict[str, float] = {}
    steps_run, fit_seconds = 0, 0.0
    while epoch < config.train.epochs:
        remaining = steps_per_epoch - done
        position = _Position(epoch, done, steps_per_epoch, int(optimizer.iterations.numpy()))
        nan_guard = _NanGuard()
        callbacks = [
            nan_guard,
            _StepCheckpoint(lambda n, d=done, e=epoch: save(d + n, e), config.train.checkpoint_every_steps, nan_guard),
            budget,
            _ScalarLogger(writers.get("train"), config.train.log_every_steps, config.train.batch_size),
            _ProgressBar(position, config.train.epochs, config.train.batch_size, progress and is_chief),
        ]
        if remaining > 0:
            before, t0 = int(optimizer.iterations.numpy()), time.perf_counter()
            model.fit(
                _epoch_dataset(data_dir, config, epoch, done, multi),
                epochs=1, steps_per_epoch=remaining, verbose=0, callbacks=callbacks, shuffle=False,
            )
            steps_run += int(optimizer.iterations.numpy()) - before
            fit_seconds += time.perf_counter() - t0
        if nan_guard.bad is not None:
            step, loss = nan_guard.bad
            last = manager.latest_checkpoint if is_chief else tf.train.latest_checkpoint(chief_ckpt_dir)
            if is_chief:
                _log_event(workdir, "non_finite_loss", step=step, loss=str(loss), last_checkpoint=last)
            raise NonFiniteLossError(
                f"training stopped: the loss became {loss} at step {step} (epoch {epoch + 1}); "
                f"the last good checkpoint is kept: {last or 'none (no checkpoint was written yet)'}. "
                "Lower --config.train.learning_rate or set --config.train.clipnorm."
            )
        done_now = int(optimizer.iterations.numpy()) - position.start_step + done
        if budget.exhausted and done_now < steps_per_epoch:
            save(done_now, epoch)
            stopped = "time_budget"
            if is_chief:
                _log_event(workdir, "time_budget", step=int(optimizer.iterations.numpy()), epoch=epoch)
                _say(f"time budget of {config.train.max_minutes} min used up at step {int(optimizer.iterations.numpy())}")
            break
        epoch, done = epoch + 1, 0
        step = int(optimizer.iterations.numpy())
        if val_ds is not None:
            val_logs = model.evaluate(val_ds, steps=val_batches, verbose=0, return_dict=True)
            if is_chief:
                with writers["validation"].as_default(step=step):
                    for key, value in val_logs.items():
                        tf.summary.scalar(key, value)
        save(0, epoch)
        if is_chief:
            _write_latent_image(model, config, ref_tokens, writers.get("validation"), step, epoch)
            _log_event(workdir, "epoch", epoch=epoch, step=step, validation={k: float(v) for k, v in val_logs.items()})
            _say(f"epoch {epoch}/{config.train.epochs} step {step}: " +
                 ", ".join(f"val_{k}={float(v):.4f}" for k, v in val_logs.items()))
        if budget.exhausted:
            stopped = "time_budget"
            break
    for writer in writers.values():
        writer.flush()

    saved_model = None
    if is_chief:
        from music_attr_vae import export

        saved_model = export.export_saved_model(
            _plain_copy(model, config, strat), config, os.path.join(workdir, SAVED_MODEL_DIR),
            reference_tokens=ref_tokens,
        )
        _log_event(workdir, "export", step=int(optimizer.iterations.numpy()), saved_model=saved_model)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "workdir": workdir,
        "data_dir": data_dir,
        "steps": int(optimizer.iterations.numpy()),
        "epochs_done": epoch,
        "resumed_from_step": start_step if latest else None,
        "stopped": stopped,
        "train_seconds": float(budget.used()),
        "examples_per_second": steps_run * config.train.batch_size / max(fit_seconds, 1e-9),
        "validation": {k: float(v) for k, v in val_logs.items()},
        "saved_model": saved_model,
    }


# ---------------------------------------------------------------- loading


def load_model(workdir: str) -> Tuple[MeasureVAE, "configs_loader.ml_collections.ConfigDict"]:
    """(model, config) of a training workdir, with the latest checkpoint's weights."""
    workdir = os.path.abspath(workdir)
    fields, _ = read_workdir_config(workdir)
    config = configs_loader.from_dict(fields)
    latest = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    if not latest:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}")
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model, config
