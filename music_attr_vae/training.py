"""Train a MeasureVAE: data, distribution strategy, checkpoints/resume, logs, export.

``train(config, workdir, source=None, strategy="auto")`` runs (or resumes) one
experiment in ``workdir``, laid out as ``music_attr_vae.workdir`` describes,
while holding the workdir's lock (a second ``train`` on it is refused).

**Resuming.**  The data order of epoch ``e`` is a pure function of
(``train.seed``, ``e``) and the model's noise of step ``n`` a pure function of
(``train.seed``, ``n``, replica), so a run restored from a checkpoint taken
after ``k`` steps of epoch ``e`` rebuilds epoch ``e``'s order, skips its first
``k`` batches and continues exactly as the uninterrupted run would have.
Checkpoints are written at every epoch end and every
``train.checkpoint_every_steps`` steps; ``CheckpointManager`` updates its
index file atomically, so a SIGKILL during a save leaves the previous
checkpoint in place; a damaged newest checkpoint (a truncated ``.data``
file) is reported by name and the newest intact one restored instead.

**Strategies.**  ``auto`` picks ``MirroredStrategy`` over all GPUs when there
are any and the default (single-device) strategy otherwise; ``default``,
``mirrored`` and ``multi_worker`` (``MultiWorkerMirroredStrategy`` from
``TF_CONFIG``) force one.  ``train.batch_size`` is the *global* batch; Keras
splits each batch across the replicas.  When XLA is used (``use_xla``), with
one replica the whole train step is compiled; with several, only each
replica's loss-and-gradient computation is (the gradient all-reduce stays
outside XLA).  Under
``multi_worker`` only the chief writes logs, the config and the SavedModel;
every worker takes part in checkpoint saves (the other workers write to a
scratch folder they delete), as ``tf.distribute`` requires.

**Failures.**  A non-finite loss stops the run with ``NonFiniteLossError``;
the checkpoint of that step is not written, so the last good one stays the
latest.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from typing import Dict, Optional, Tuple

import keras
import tensorflow as tf

from music_attr_vae import configs_loader, fileio
from music_attr_vae import workdir as wd
from music_attr_vae import training_callbacks as cb
from music_attr_vae import run_data
from music_attr_vae.model.regularization import normalize_mapping
from music_attr_vae.model.vae import MeasureVAE, build_model, use_xla
from music_attr_vae.optimizers import FusedAdam, FusedAdamW

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
# Config sections that define the network: resuming with different values is refused.
_ARCHITECTURE_SECTIONS = ("model", "regularization")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the last good checkpoint is kept."""


# ---------------------------------------------------------------- small helpers


def _log_event(workdir: str, event: str, **fields) -> None:
    record = {"event": event, "time": time.time(), **fields}
    with open(wd.path(workdir, wd.HISTORY_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def _say(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)


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


def _architecture(config: dict) -> Dict[str, object]:
    """The flattened network-defining fields of a config dict.

    Regularization entries are normalised, so a field a workdir written by an
    older version lacks counts as its default.
    """
    sections = {k: config.get(k, {}) for k in _ARCHITECTURE_SECTIONS}
    if sections["regularization"]:
        sections["regularization"] = normalize_mapping(sections["regularization"], int(config["model"]["z_dim"]))
    return configs_loader.flatten(sections)


def _check_resume_compatible(workdir: str, config) -> None:
    """Refuse to resume a workdir whose network differs from ``config``'s."""
    if not wd.is_workdir(workdir):
        return
    old, _ = wd.read_workdir_config(workdir)
    new = configs_loader.to_dict(config)
    old_flat, new_flat = _architecture(old), _architecture(new)
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
        return FusedAdamW(weight_decay=t.weight_decay, **kwargs)
    return FusedAdam(**kwargs)


# ---------------------------------------------------------------- the run


def _write_config(workdir: str, config, data_dir: str, run: dict) -> None:
    data = configs_loader.to_dict(config)
    data["data_dir"] = os.path.abspath(data_dir)
    data["run"] = run
    fileio.write_json(wd.path(workdir, wd.CONFIG_FILE), data, sort_keys=True)


def _plain_copy(model: MeasureVAE, config, strategy) -> MeasureVAE:
    """The model outside any strategy (for export): the same weights in ordinary variables."""
    if strategy is tf.distribute.get_strategy():  # the default strategy: variables are ordinary already
        return model
    plain = build_model(config)
    plain.set_weights(model.get_weights())
    return plain


class _Trainer:
    """One invocation of ``train``: the model, its checkpoint state and the epoch loop."""

    def __init__(self, config, workdir: str, data_dir: str, strategy, strategy_name: str, *,
                 is_chief: bool, scratch: Optional[str], progress: bool):
        self.config, self.workdir, self.data_dir = config, workdir, data_dir
        self.strategy, self.is_chief, self.scratch, self.progress = strategy, is_chief, scratch, progress
        self.multi = _multi_worker(strategy)
        replicas = strategy.num_replicas_in_sync
        self.steps_per_epoch, self.total_steps = run_data.total_steps(data_dir, config, replicas)
        if is_chief:
            _write_config(workdir, config, data_dir, {
                "source": config.data.source, "strategy": strategy_name,
                "strategy_class": type(strategy).__name__, "replicas": replicas,
            })
        with strategy.scope():
            self.model = build_model(config)
            self.optimizer = build_optimizer(config, self.total_steps)
            self.optimizer.build(self.model.trainable_variables)
            # One replica: XLA-compile the whole step.  Several: only each replica's
            # loss and gradients (the all-reduce cannot live inside an XLA cluster).
            jit = use_xla(config)
            self.model.jit_inner = jit and replicas > 1
            self.model.compile(optimizer=self.optimizer, jit_compile=jit and replicas == 1)
        self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.done_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.seconds_var = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="train_seconds")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, epoch=self.epoch_var, step_in_epoch=self.done_var,
            train_seconds=self.seconds_var,
        )
        self.chief_ckpt_dir = wd.path(workdir, wd.CHECKPOINT_DIR)
        # every worker saves (tf.distribute needs it); the others into scratch folders
        ckpt_dir = self.chief_ckpt_dir if is_chief else wd.path(scratch, wd.CHECKPOINT_DIR)
        self.manager = tf.train.CheckpointManager(self.checkpoint, ckpt_dir, max_to_keep=config.train.keep_checkpoints)
        self.writers = {}
        if is_chief:
            self.writers = {
                split: tf.summary.create_file_writer(wd.tensorboard_dir(workdir, split))
                for split in ("train", "validation")
            }
        self.val_ds, self.val_batches = run_data.validation_dataset(data_dir, config, self.multi)
        self.budget = cb.TimeBudget(config.train.max_minutes * 60.0)
        self.val_logs: Dict[str, float] = {}
        self.steps_run, self.fit_seconds = 0, 0.0

    @functools.cached_property
    def ref_tokens(self):
        """Test measures for the epoch image and the export's maps, read when first needed (not before step 1)."""
        return run_data.reference_tokens(self.data_dir) if self.is_chief else None

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def event(self, name: str, **fields) -> None:
        if self.is_chief:
            _log_event(self.workdir, name, **fields)

    def restore(self) -> Optional[str]:
        """Restore the chief's newest intact checkpoint, if any; returns its path."""
        latest, damaged = wd.intact_checkpoint(self.chief_ckpt_dir, _say if self.is_chief else None)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        if damaged:
            self.event("damaged_checkpoints", skipped=damaged, using=latest)
        self.budget.already = float(self.seconds_var.numpy())
        epoch, done = int(self.epoch_var.numpy()), int(self.done_var.numpy())
        self.event("resume" if latest else "start", step=self.step, epoch=epoch, step_in_epoch=done,
                   checkpoint=latest, steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps)
        if self.is_chief:
            c = self.config
            _say(f"resuming from step {self.step} (epoch {epoch + 1}, batch {done})" if latest else
                 f"training {c.name}: {c.train.epochs} epochs x {self.steps_per_epoch} steps of {c.train.batch_size}")
        return latest

    def save(self, epoch: int, done_in_epoch: int) -> None:
        self.epoch_var.assign(epoch)
        self.done_var.assign(done_in_epoch)
        self.seconds_var.assign(self.budget.used())
        self.manager.save(checkpoint_number=self.step)

    def run_epoch(self, epoch: int, done: int) -> int:
        """Train the rest of epoch ``epoch`` (from batch ``done``); returns the batches of it now done."""
        c = self.config
        remaining = self.steps_per_epoch - done
        if remaining <= 0:
            return done
        nan_guard = cb.NanGuard()
        callbacks = [
            nan_guard,
            cb.StepCheckpoint(lambda n: self.save(epoch, done + n), c.train.checkpoint_every_steps, nan_guard),
            self.budget,
            cb.ScalarLogger(self.writers.get("train"), c.train.log_every_steps, c.train.batch_size),
            cb.ProgressBar(epoch, c.train.epochs, done, self.steps_per_epoch, c.train.batch_size,
                           self.progress and self.is_chief),
        ]
        if c.train.inject_nan_at_step:
            callbacks.append(cb.InjectNan(c.train.inject_nan_at_step))
        before, t0 = self.step, time.perf_counter()
        self.model.fit(
            run_data.epoch_dataset(self.data_dir, c, epoch, done, self.multi), epochs=1, steps_per_epoch=remaining,
            verbose=0, callbacks=callbacks, shuffle=False,
        )
        self.steps_run += self.step - before
        self.fit_seconds += time.perf_counter() - t0
        if nan_guard.bad is not None:
            self._fail(epoch, *nan_guard.bad)
        return done + self.step - before

    def _fail(self, epoch: int, step: int, loss: float) -> None:
        last = self.manager.latest_checkpoint if self.is_chief else tf.train.latest_checkpoint(self.chief_ckpt_dir)
        self.event("non_finite_loss", step=step, loss=str(loss), last_checkpoint=last)
        raise NonFiniteLossError(
            f"training stopped: the loss became {loss} at step {step} (epoch {epoch + 1}); "
            f"the last good checkpoint is kept: {last or 'none (no checkpoint was written yet)'}. "
            "Lower --config.train.learning_rate or set --config.train.clipnorm."
        )

    def end_epoch(self, epoch: int) -> None:
        """Validation, the epoch checkpoint, TensorBoard and the latent image after epoch ``epoch`` (0-based)."""
        if self.val_ds is not None:
            self.val_logs = {
                k: float(v)
                for k, v in self.model.evaluate(self.val_ds, steps=self.val_batches, verbose=0, return_dict=True).items()
            }
        self.save(epoch + 1, 0)
        if not self.is_chief:
            return
        with self.writers["validation"].as_default(step=self.step):
            for key, value in self.val_logs.items():
                tf.summary.scalar(key, value)
        cb.write_latent_image(self.model, self.config, self.ref_tokens, self.writers["validation"], self.step, epoch + 1)
        self.event("epoch", epoch=epoch + 1, step=self.step, validation=self.val_logs)
        _say(f"epoch {epoch + 1}/{self.config.train.epochs} step {self.step}: "
             + ", ".join(f"val_{k}={v:.4f}" for k, v in self.val_logs.items()))

    def loop(self) -> str:
        """Train to the last epoch or the time budget; returns 'completed' or 'time_budget'."""
        epoch, done = int(self.epoch_var.numpy()), int(self.done_var.numpy())
        while epoch < self.config.train.epochs:
            if self.budget.exhausted:
                self.event("time_budget", step=self.step, epoch=epoch)
                if self.is_chief:
                    _say(f"time budget of {self.config.train.max_minutes} min used up at step {self.step}")
                return "time_budget"
            before = done
            done = self.run_epoch(epoch, done)
            if done < self.steps_per_epoch:  # stopped early by the budget: keep the exact position
                if done == before and not self.budget.exhausted:
                    raise RuntimeError(f"the training data of {self.data_dir} ran out before the end of epoch {epoch + 1}")
                self.save(epoch, done)
                continue
            self.end_epoch(epoch)
            epoch, done = epoch + 1, 0
        return "completed"

    def finish(self, stopped: str, resumed_from: Optional[str]) -> dict:
        for writer in self.writers.values():
            writer.flush()
        saved_model = None
        if self.is_chief:
            from music_attr_vae.serving import export

            saved_model = export.export_saved_model(
                _plain_copy(self.model, self.config, self.strategy), self.config,
                wd.path(self.workdir, wd.SAVED_MODEL_DIR), reference_tokens=self.ref_tokens,
            )
            self.event("export", step=self.step, saved_model=saved_model)
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return {
            "workdir": self.workdir,
            "data_dir": self.data_dir,
            "steps": self.step,
            "epochs_done": int(self.epoch_var.numpy()),
            "resumed_from_step": None if resumed_from is None else int(resumed_from.rsplit("-", 1)[1]),
            "stopped": stopped,
            "train_seconds": float(self.budget.used()),
            "examples_per_second": self.steps_run * self.config.train.batch_size / max(self.fit_seconds, 1e-9),
            "validation": dict(self.val_logs),
            "saved_model": saved_model,
        }


def train(
    config, workdir: str, source: Optional[str] = None, strategy: str = "auto", *,
    progress: bool = True, cache_dir: Optional[str] = None, allow_unverified_download: bool = False,
) -> dict:
    """Train (or resume) ``config`` in ``workdir``; returns a summary dict.

    Keys: workdir, data_dir, steps, epochs_done, resumed_from_step, stopped
    ('completed' | 'time_budget'), train_seconds (inside ``fit``, over all
    runs of the workdir), examples_per_second (this call's steps over its
    time inside ``fit``, compilation included), validation (the last epoch's
    metrics), saved_model (path or None).  ``cache_dir`` and
    ``allow_unverified_download`` apply when the folk-rnn corpus must be downloaded.
    """
    configs_loader.validate_config(config)
    strat = make_strategy(strategy) if isinstance(strategy, str) else strategy
    strategy_name = strategy if isinstance(strategy, str) else type(strategy).__name__
    if _multi_worker(strat) and config.train.max_minutes:
        raise ValueError("config.train.max_minutes cannot be used with --strategy=multi_worker: "
                         "the workers' clocks would stop them at different steps")
    workdir = _prepare_workdir(workdir)
    is_chief, task_id = _worker_role(strat)
    download = dict(cache_dir=cache_dir, allow_unverified_download=allow_unverified_download)
    if not is_chief:  # the chief holds the lock for the whole cluster
        return _train_in(config, workdir, source, strat, strategy_name, is_chief, task_id, progress, download)
    with wd.WorkdirLock(workdir):
        return _train_in(config, workdir, source, strat, strategy_name, is_chief, task_id, progress, download)


def _train_in(config, workdir, source, strat, strategy_name, is_chief, task_id, progress, download: dict) -> dict:
    """``train`` once the workdir is ready (and locked, on the chief)."""
    scratch = None if is_chief else wd.worker_scratch(workdir, task_id)
    if scratch:
        os.makedirs(scratch, exist_ok=True)
    if is_chief:
        _check_resume_compatible(workdir, config)
    keras.utils.set_random_seed(config.train.seed)
    source = source or config.data.source or "folk_rnn"
    data_dir, _ = run_data.resolve_data(
        config, workdir, source, scratch=wd.path(scratch, wd.DATA_DIR) if scratch else None,
        progress=progress and is_chief, **download,
    )
    config = configs_loader.from_dict(configs_loader.to_dict(config))  # a private copy we may annotate
    config.data.source = source
    trainer = _Trainer(config, workdir, data_dir, strat, strategy_name, is_chief=is_chief, scratch=scratch,
                       progress=progress)
    resumed_from = trainer.restore()
    return trainer.finish(trainer.loop(), resumed_from)
