"""Keras callbacks of a training run: NaN guard, step checkpoints, time budget, TensorBoard, progress.

Each callback does one thing; ``training.py`` lists them in this order for
every epoch's ``fit`` (the order matters: the NaN guard must see a bad step
before the checkpointer could save it).  The epoch image of the test latents
is here too.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from music_attr_vae import configs_loader
from music_attr_vae.data import attributes as attrs

# Logged values that are instantaneous, not running means over the epoch.
_INSTANT_KEYS = ("beta", "learning_rate")


def _global_step(model) -> int:
    return int(model.optimizer.iterations.numpy())


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers (step, loss)."""

    def __init__(self):
        super().__init__()
        self.bad: Optional[Tuple[int, float]] = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.bad = (_global_step(self.model), float(loss))
            self.model.stop_training = True


class InjectNan(keras.callbacks.Callback):
    """Fault injection for tests (``train.inject_nan_at_step``): poison the weights so step ``step``'s loss is NaN."""

    def __init__(self, step: int):
        super().__init__()
        self.step = int(step)

    def on_train_batch_begin(self, batch, logs=None):
        if _global_step(self.model) + 1 == self.step:
            first = self.model.trainable_variables[0]
            first.assign(tf.fill(first.shape, tf.constant(float("nan"), first.dtype)))


class StepCheckpoint(keras.callbacks.Callback):
    """Calls ``save(batches done in this fit)`` every ``every`` global steps, never after a non-finite loss."""

    def __init__(self, save: Callable[[int], None], every: int, nan_guard: NanGuard):
        super().__init__()
        self.save, self.every, self.nan_guard = save, every, nan_guard

    def on_train_batch_end(self, batch, logs=None):
        if self.every and self.nan_guard.bad is None and _global_step(self.model) % self.every == 0:
            self.save(batch + 1)


class TimeBudget(keras.callbacks.Callback):
    """Stops training once ``seconds`` of training (time inside ``fit``, over all runs) have passed."""

    def __init__(self, seconds: float, already: float = 0.0):
        super().__init__()
        self.seconds, self.already = seconds, already
        self._start: Optional[float] = None

    @property
    def exhausted(self) -> bool:
        return bool(self.seconds) and self.used() >= self.seconds

    def used(self) -> float:
        return self.already + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.already, self._start = self.used(), None

    def on_train_batch_end(self, batch, logs=None):
        if self.exhausted:
            self.model.stop_training = True


class ScalarLogger(keras.callbacks.Callback):
    """Training scalars to TensorBoard every ``every`` global steps.

    Keras reports running means over the epoch; this logs the mean over the
    last interval instead (recovered from two running means), so the curves
    show the current state rather than the epoch's history.
    """

    def __init__(self, writer, every: int, batch_size: int):
        super().__init__()
        self.writer, self.every, self.batch_size = writer, every, batch_size
        self._last: Dict[str, float] = {}
        self._last_batches = 0
        self._last_time = 0.0

    def on_train_begin(self, logs=None):
        self._last, self._last_batches, self._last_time = {}, 0, time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        step = _global_step(self.model)
        if self.writer is None or step % self.every:
            return
        n, now = batch + 1, time.perf_counter()
        with self.writer.as_default(step=step):
            for key, value in (logs or {}).items():
                if key not in _INSTANT_KEYS and self._last_batches:
                    value = (value * n - self._last.get(key, value) * self._last_batches) / (n - self._last_batches)
                tf.summary.scalar(key, value)
            rate = (n - self._last_batches) * self.batch_size / max(now - self._last_time, 1e-9)
            tf.summary.scalar("examples_per_second", rate)
        self._last, self._last_batches, self._last_time = dict(logs or {}), n, now


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar per epoch: loss, teacher-forced token accuracy and a moving examples/s."""

    def __init__(self, epoch: int, epochs: int, done: int, steps_per_epoch: int, batch_size: int, enabled: bool):
        super().__init__()
        self.epoch, self.epochs, self.done, self.steps = epoch, epochs, done, steps_per_epoch
        self.batch_size, self.enabled = batch_size, enabled
        self.bar = None
        self._rate: Optional[float] = None
        self._t = 0.0

    def on_train_begin(self, logs=None):
        if not self.enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.steps, initial=self.done, desc=f"epoch {self.epoch + 1}/{self.epochs}", unit="step",
            file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
        )
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is None:
            return
        now = time.perf_counter()
        rate = self.batch_size / max(now - self._t, 1e-9)
        self._t = now
        # the first step includes compilation: start the average at the second
        self._rate = rate if self._rate is None or batch == 1 else 0.95 * self._rate + 0.05 * rate
        logs = logs or {}
        self.bar.set_postfix(
            loss=f"{logs.get('loss', float('nan')):.4f}", acc=f"{logs.get('accuracy', float('nan')):.4f}",
            ex_s=f"{self._rate:.0f}", refresh=False,
        )
        self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------- the epoch image


def latent_figure_png(z: np.ndarray, attribute_values: np.ndarray, dims: Dict[str, int], title: str) -> np.ndarray:
    """An RGBA image (H, W, 4 uint8): per attribute, its dim against the next dim, coloured by the attribute.

    ``dims`` maps regularised attributes to their dims; when empty (a plain
    VAE) dims 0 and 1 are shown against the first two attributes.  The panels
    are drawn by the evaluation's Figure-1 helper (``figures.latent_scatter_panels``).
    """
    from matplotlib.figure import Figure

    from music_attr_vae.evaluation import figures

    panels = dims or {name: i for i, name in enumerate(attrs.ATTRIBUTE_NAMES[:2])}
    fig = Figure(figsize=(4 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, dim) in zip(axes, panels.items()):
        other = (dim + 1) % z.shape[1]
        column = attribute_values[:, [attrs.attribute_index(name)]]
        figures.latent_scatter_panels([ax], z[:, [dim, other]], column, (dim, other), names=[name])
    fig.suptitle(title)
    return tf.image.decode_png(figures.figure_png(fig), channels=4).numpy()


def write_latent_image(model, config, tokens: Optional[np.ndarray], writer, step: int, epoch: int,
                       max_measures: int = 2000) -> None:
    """Encode (a fixed sample of at most ``max_measures``) test measures and log their latent scatter as an image."""
    if tokens is None or writer is None:
        return
    if len(tokens) > max_measures:  # a fixed random sample: shard order clusters transpositions of one tune
        tokens = tokens[np.sort(np.random.default_rng(0).choice(len(tokens), max_measures, replace=False))]
    z = np.concatenate([model.encode(tokens[i : i + 512])[0].numpy() for i in range(0, len(tokens), 512)])
    dims = configs_loader.regularized_dims(config)
    label = "regularised dims" if dims else "dims 0-1 (not regularised)"
    image = latent_figure_png(z, attrs.compute_all(tokens), dims, f"{config.name}: test latents, {label}, epoch {epoch}")
    with writer.as_default(step=step):
        tf.summary.image("test_latents", image[None], step=step)
