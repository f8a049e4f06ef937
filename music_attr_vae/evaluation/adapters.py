"""Model adapters for evaluation: a batched NumPy view of a trained model.

:class:`LatentModel` is all :func:`music_attr_vae.evaluation.evaluate.evaluate`
needs -- ``encode`` (posterior means and log-variances), greedy free-running
``decode`` and teacher-forced statistics -- in batches of ``batch_size``.
:class:`KerasLatentModel` wraps a MeasureVAE restored from a workdir;
:class:`SavedModelLatentModel` wraps an export through the one client,
:class:`~music_attr_vae.serving.client.ServedModel`.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from scipy import special

from music_attr_vae import batching
from music_attr_vae.serving.client import ServedModel


def _run_batched(fn: Callable, inputs: Sequence[np.ndarray], batch_size: int) -> List[tuple]:
    """Apply ``fn`` to consecutive batches of ``inputs``; returns the per-batch outputs as NumPy."""
    outputs = []
    for part in batching.batch_slices(len(inputs[0]), batch_size):
        out = fn(*[x[part] for x in inputs])
        out = out if isinstance(out, tuple) else (out,)
        outputs.append(tuple(np.asarray(o) for o in out))
    return outputs


class LatentModel:
    """Batched NumPy view of a model: what :func:`evaluate` needs."""

    z_dim: int
    batch_size: int = 512
    # Why teacher_forced_logits is unavailable (None when it is available).
    teacher_forced_unavailable: Optional[str] = None

    def _encode_batch(self, tokens):
        raise NotImplementedError

    def _decode_batch(self, z):
        raise NotImplementedError

    def _logits_batch(self, z, tokens):
        raise NotImplementedError

    def encode(self, tokens: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """tokens (N, 24) -> (z_mean, z_log_var), each (N, D) float32."""
        parts = _run_batched(self._encode_batch, [np.asarray(tokens, np.int32)], self.batch_size)
        return tuple(np.concatenate([p[i] for p in parts]).astype(np.float32) for i in range(2))

    def decode(self, z: np.ndarray) -> np.ndarray:
        """latents (N, D) -> greedy free-running tokens (N, 24) int32."""
        parts = _run_batched(self._decode_batch, [np.asarray(z, np.float32)], self.batch_size)
        return np.concatenate([p[0] for p in parts]).astype(np.int32)

    def teacher_forced_stats(self, z: np.ndarray, tokens: np.ndarray) -> Tuple[float, float]:
        """(token accuracy, NLL per token) of the teacher-forced decoder given latents z."""

        def stats(z_batch, token_batch):
            logits = np.asarray(self._logits_batch(z_batch, token_batch), np.float64)
            log_probs = logits - special.logsumexp(logits, axis=-1, keepdims=True)
            picked = np.take_along_axis(log_probs, token_batch[..., None].astype(np.int64), axis=-1)[..., 0]
            return (logits.argmax(-1) == token_batch), -picked

        parts = _run_batched(stats, [np.asarray(z, np.float32), np.asarray(tokens, np.int32)], self.batch_size)
        correct = np.concatenate([p[0] for p in parts])
        nll = np.concatenate([p[1] for p in parts])
        return float(correct.mean()), float(nll.mean())


class KerasLatentModel(LatentModel):
    """A MeasureVAE (keras.Model) restored from a workdir; its methods run as tf.functions."""

    def __init__(self, model, z_dim: int, batch_size: int = 512):
        self.model = model
        self.z_dim = int(z_dim)
        self.batch_size = batch_size
        # One trace each, whatever the batch size (the last batch is usually smaller).
        # The model's loops over the 24 ticks are Python loops, unrolled at trace time: no autograph.
        tokens_spec = tf.TensorSpec([None, model.codec.ticks_per_measure], tf.int32)
        z_spec = tf.TensorSpec([None, self.z_dim], tf.float32)
        self._encode_fn = tf.function(lambda t: model.encode(t), input_signature=[tokens_spec], autograph=False)
        self._decode_fn = tf.function(lambda z: model.decode(z, temperature=0.0, seed=0),
                                      input_signature=[z_spec], autograph=False)
        self._logits_fn = tf.function(lambda z, t: model.teacher_forced_logits(z, t),
                                      input_signature=[z_spec, tokens_spec], autograph=False)

    def _encode_batch(self, tokens):
        mean, log_var = self._encode_fn(tokens)
        return mean.numpy(), log_var.numpy()

    def _decode_batch(self, z):
        return self._decode_fn(z).numpy()

    def _logits_batch(self, z, tokens):
        return self._logits_fn(z, tokens).numpy()


class SavedModelLatentModel(LatentModel):
    """An exported SavedModel, through :class:`music_attr_vae.serving.client.ServedModel`.

    ``encode`` / ``decode`` give the latents and the free-running output; the
    teacher-forced figures come from ``teacher_forced_nll(tokens) -> {nll
    (summed over the 24 ticks), accuracy}``, which decodes from the measure's
    own ``z_mean`` -- the same latents :func:`evaluate` passes.  An export
    without that signature gets null teacher-forced figures and the reason.
    """

    def __init__(self, path: str, batch_size: int = 512):
        self.served = ServedModel(path)
        self.batch_size = batch_size
        for name in ("encode", "decode"):
            if not self.served.has_function(name):
                raise ValueError(f"--saved_model={path} has no '{name}' signature")
        if not self.served.has_function("teacher_forced_nll"):
            self.teacher_forced_unavailable = "the SavedModel exports no teacher_forced_nll signature"
        self.z_dim = self.served.z_dim

    def _encode_batch(self, tokens):
        return self.served.encode_distribution(tokens)

    def _decode_batch(self, z):
        return self.served.decode(z)

    def teacher_forced_stats(self, z: np.ndarray, tokens: np.ndarray) -> Tuple[float, float]:
        """(token accuracy, NLL per token) from the export's teacher_forced_nll (which encodes itself)."""
        parts = _run_batched(self.served.teacher_forced_nll, [np.asarray(tokens, np.int32)], self.batch_size)
        nll = np.concatenate([p[0] for p in parts])
        accuracy = np.concatenate([p[1] for p in parts])
        return float(accuracy.mean()), float(nll.mean() / tokens.shape[1])
