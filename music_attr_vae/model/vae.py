"""MeasureVAE: encoder + hierarchical decoder + attribute regularization.

Training objective (per replica batch)::

    loss = recon + beta(step) * kl + ramp(step) * (sum_a gamma_a * reg_a + consistency)

* ``recon``: token cross-entropy, mean over the B*24 tokens (teacher forced);
* ``kl``: KL(q(z|x) || N(0, I)), summed over latent dims, mean over the batch;
* ``reg_a``: the attribute-regularization term of each mapped attribute
  (``regularization.py``), computed on the *sampled* z as in the paper;
* ``beta(step) = beta * min(1, step / beta_anneal_steps)`` (constant when
  ``beta_anneal_steps == 0``) and ``ramp(step)`` likewise with
  ``gamma_ramp_steps`` (after ``gamma_ramp_start_steps`` steps of gamma = 0);
* ``consistency``: the optional decoder consistency and monotone terms
  (``MeasureVAE.consistency``), 0 unless some ``regularization.<attribute>.consistency``
  or ``.monotone`` weight is > 0.

The custom ``train_step``/``test_step`` follow the keras.io generative-model
pattern.  Under a distribution strategy each replica computes these means on
its share of the global batch; the loss is multiplied by
``1/num_replicas_in_sync`` before the gradient because Keras *sums* replica
gradients, so the update equals the gradient of the global-batch mean.
Validation (``test_step``) decodes from ``z_mean`` (no sampling noise) and
also reports the free-running token accuracy (the decoder fed its own greedy
predictions), the figure the paper evaluates.

All randomness is stateless and keyed by (seed, step, replica): the noise of
step ``n`` is the same whether or not the run was interrupted before it.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from music_attr_vae.data.attributes import ATTRIBUTE_NAMES
from music_attr_vae.data.codec import CODEC, MeasureCodec
from music_attr_vae.model.decoder import HierarchicalDecoder
from music_attr_vae.model.encoder import Encoder
from music_attr_vae.model.gru import products_in
from music_attr_vae.model.soft_attributes import soft_attribute
from music_attr_vae.model.regularization import AttributeRegularization


def _num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _replica_id():
    ctx = tf.distribute.get_replica_context()
    rid = ctx.replica_id_in_sync_group if ctx is not None else 0
    return tf.cast(rid, tf.int32)


def _linear_ramp(step, steps: int, start: int = 0):
    """0 before ``start``; then min(1, (step - start) / steps), a step to 1.0 when ``steps`` is 0."""
    shifted = tf.cast(step, tf.float32) - float(start)
    if steps <= 0:
        if start <= 0:
            return tf.constant(1.0, tf.float32)
        return tf.cast(shifted >= 0.0, tf.float32)
    return tf.clip_by_value(shifted / float(steps), 0.0, 1.0)


def kl_divergence(z_mean, z_log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)) summed over dims, per example (B,)."""
    return -0.5 * tf.reduce_sum(1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=-1)


class MeasureVAE(keras.Model):
    """The hierarchical measure VAE with attribute-regularised latent dims.

    Inference API (eager or inside a tf.function, e.g. a SavedModel signature):
      * ``encode(tokens int (B, 24)) -> (z_mean, z_log_var)`` float32 (B, D);
      * ``decode(z (B, D), temperature=0.0, seed=None) -> tokens int32 (B, 24)``;
      * ``teacher_forced_logits(z, tokens) -> logits (B, 24, 32)``.
    These trace the GRU products in ``inference_matmul_dtype``; training
    (``train_step``/``test_step``) uses ``matmul_dtype``.
    """

    def __init__(
        self,
        *,
        z_dim: int,
        embed_dim: int,
        enc_hidden: int,
        enc_layers: int,
        dec_hidden: int,
        dec_layers: int,
        dropout: float = 0.0,
        token_dropout: float = 0.0,
        mask_hold_at_start: bool = True,
        rnn_chains: int = 1,
        unroll: bool = True,
        matmul_dtype: str = "float32",
        inference_matmul_dtype: str = "float32",
        regularization: Optional[Mapping[str, Mapping]] = None,
        beta: float = 0.001,
        beta_anneal_steps: int = 0,
        gamma_ramp_steps: int = 0,
        gamma_ramp_start_steps: int = 0,
        consistency_batch: int = 64,
        seed: int = 0,
        eval_free_running: bool = True,
        codec: MeasureCodec = CODEC,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.codec = codec
        self.z_dim = int(z_dim)
        self.beta = float(beta)
        self.beta_anneal_steps = int(beta_anneal_steps)
        self.gamma_ramp_steps = int(gamma_ramp_steps)
        self.gamma_ramp_start_steps = int(gamma_ramp_start_steps)
        self.consistency_batch = int(consistency_batch)
        self.seed = int(seed)
        self.eval_free_running = bool(eval_free_running)
        self.matmul_dtype = matmul_dtype
        self.inference_matmul_dtype = inference_matmul_dtype
        self.encoder = Encoder(
            z_dim, embed_dim, enc_hidden, enc_layers, dropout, rnn_chains, unroll, matmul_dtype, codec=codec,
            name="encoder",
        )
        self.decoder = HierarchicalDecoder(
            z_dim, embed_dim, dec_hidden, dec_layers, dropout, mask_hold_at_start, rnn_chains, unroll, matmul_dtype,
            token_dropout=token_dropout, codec=codec, name="decoder",
        )
        self.attribute_reg = AttributeRegularization(regularization or {}, z_dim, ATTRIBUTE_NAMES, name="attribute_reg")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.free_accuracy_tracker = keras.metrics.Mean(name="free_accuracy")
        self.consistency_specs = [
            (name, spec) for name, spec in self.attribute_reg.mapping.items()
            if spec["consistency"] > 0 or spec["monotone"] > 0
        ]
        self.consistency_tracker = keras.metrics.Mean(name="consistency")
        self._decode_fn = None
        self._encode_fn = None
        self._grad_fn = None
        # Set by training under a multi-replica strategy: XLA-compile each replica's
        # loss and gradients (the whole step cannot be one XLA cluster there).
        self.jit_inner = False

    # ------------------------------------------------------------------ building

    def call(self, tokens, training=False):
        """Teacher-forced reconstruction logits from z_mean (used to build the weights)."""
        z_mean, _ = self.encoder(tokens, training=training)
        return self.decoder.teacher_forced(z_mean, tokens, training=training)

    def build(self, input_shape=None):
        """Create every weight by running a dummy batch through the encoder and both decoder modes."""
        self.encoder.build()
        self.decoder.build()
        self.built = True

    def build_weights(self) -> "MeasureVAE":
        """Build eagerly (before a strategy's tf.function or a checkpoint restore needs the variables)."""
        if not self.built:
            self.build()
        return self

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.recon_tracker, self.kl_tracker, self.accuracy_tracker]
        if self.eval_free_running:
            trackers.append(self.free_accuracy_tracker)
        if self.consistency_specs:
            trackers.append(self.consistency_tracker)
        return trackers + list(self.attribute_reg.trackers.values())

    # ------------------------------------------------------------------ inference

    def encode(self, tokens):
        """tokens int (B, 24) -> (z_mean, z_log_var) float32 (B, D)."""
        tokens = tf.cast(tokens, tf.int32)
        with products_in(self.inference_matmul_dtype):
            if not tf.executing_eagerly():
                return self.encoder(tokens, training=False)
            if self._encode_fn is None:
                self._encode_fn = tf.function(
                    lambda t: self.encoder(t, training=False),
                    input_signature=[tf.TensorSpec([None, self.codec.ticks_per_measure], tf.int32)],
                    autograph=False,
                )
            return self._encode_fn(tokens)

    def decode(self, z, temperature=0.0, seed=None):
        """Free-running decode of z (B, D) -> tokens int32 (B, 24).

        ``temperature`` 0 is greedy; > 0 samples.  ``seed`` (int) makes the
        sample reproducible; None draws a fresh one.  Works eagerly (through a
        cached tf.function) and inside a caller's tf.function.
        """
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        z = tf.cast(z, tf.float32)
        temperature = tf.cast(temperature, tf.float32)
        seed = tf.cast(seed, tf.int32)
        with products_in(self.inference_matmul_dtype):
            if not tf.executing_eagerly():
                return self._decode_tokens(z, temperature, seed)
            if self._decode_fn is None:
                self._decode_fn = tf.function(
                    self._decode_tokens,
                    input_signature=[
                        tf.TensorSpec([None, self.z_dim], tf.float32),
                        tf.TensorSpec([], tf.float32),
                        tf.TensorSpec([], tf.int32),
                    ],
                    autograph=False,
                    # XLA fuses the 24-step loop's small ops; with bfloat16 products oneDNN's
                    # graph kernels are faster than XLA's on CPU (see gru.matmul)
                    jit_compile=self.inference_matmul_dtype == "float32",
                )
            return self._decode_fn(z, temperature, seed)

    def _decode_tokens(self, z, temperature, seed):
        return self.decoder.free_running(z, temperature, seed)[0]

    def teacher_forced_logits(self, z, tokens):
        """Logits (B, 24, 32) of ``tokens`` given z, each tick fed the true previous token."""
        with products_in(self.inference_matmul_dtype):
            return self.decoder.teacher_forced(tf.cast(z, tf.float32), tokens, training=False)

    # ------------------------------------------------------------------ training

    def beta_at(self, step):
        return self.beta * _linear_ramp(step, self.beta_anneal_steps)

    def gamma_ramp_at(self, step):
        return _linear_ramp(step, self.gamma_ramp_steps, self.gamma_ramp_start_steps)

    def _step_seed(self, step, salt: int):
        """Stateless seed [2] for this (seed, step, replica, use)."""
        step = tf.cast(step, tf.int32)
        return tf.stack([(self.seed * 1000003 + salt) % (2**31 - 1), step * 64 + _replica_id()])

    def _objective(self, tokens, attributes, z_mean, z_log_var, z, step, training):
        logits = self.decoder.teacher_forced(z, tokens, training=training, seed=self._step_seed(step, 2))
        recon = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(tokens, logits, from_logits=True)
        )
        kl = tf.reduce_mean(kl_divergence(z_mean, z_log_var))
        ramp = self.gamma_ramp_at(step)
        reg, _ = self.attribute_reg(z, attributes, weight=ramp)
        beta = self.beta_at(step)
        loss = recon + beta * kl + reg
        if self.consistency_specs:
            consistency = self.consistency(z, attributes, step=step)
            self.consistency_tracker.update_state(consistency)
            loss = loss + ramp * consistency
        accuracy = tf.reduce_mean(
            tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tokens), tf.float32)
        )
        return loss, recon, kl, beta, accuracy

    def consistency(self, z, attributes, step=None):
        """Decoder consistency and monotone terms (``regularization.<attribute>.consistency`` /
        ``.monotone`` > 0; this project's options).

        The paper's loss orders a regularised dim by its attribute in the
        *encoder*; nothing makes the *decoder* follow that dim when it moves
        alone, and with the other dims also describing the notes it largely
        ignores it (pitch range changed by 0.10 over a whole traversal).  These
        terms ask for it directly, on the first ``consistency_batch`` rows of
        z, held fixed (no gradient to the encoder), decoded differentiably
        (``soft_free_running``) and measured by the expected attribute of the
        output (``soft_attributes.py``).

        * consistency: the k-th such dim takes the value of another row (the
          batch rolled by k + 1, so attributes are recombined independently),
          and the decoded attribute should equal the attribute of the row the
          value came from: ``weight * mean |E[a(decoded)] - a_donor|``.
        * monotone: a traversal step.  The dim takes a value ``v`` drawn
          uniformly from the batch's mean +- 3 std of that dim (the range
          ``evaluate`` traverses, tails included, which donors rarely reach)
          and ``v + std / 2`` (one of its 13 steps); the attribute should not
          fall across the step: ``weight * mean relu(E[a(v)] - E[a(v + step)])``.
          It is zero wherever the decoder already follows the dim, so it acts
          only on the steps that fall.

        All rows are decoded in one batch.  The monotone values are drawn
        statelessly from (seed, ``step``, replica); without ``step``, step 0.
        """
        zc = tf.stop_gradient(tf.cast(z[: self.consistency_batch], tf.float32))
        ac = tf.cast(attributes[: self.consistency_batch], tf.float32)
        swapped, targets, monotone, step_rows = zc, [], [], []
        for k, (name, spec) in enumerate(self.consistency_specs):
            dim_mask = tf.one_hot(spec["dim"], self.z_dim)
            if spec["consistency"] > 0:
                donor = tf.roll(zc[:, spec["dim"]], shift=k + 1, axis=0)
                swapped = swapped * (1.0 - dim_mask) + donor[:, None] * dim_mask
                target = tf.roll(ac[:, ATTRIBUTE_NAMES.index(name)], shift=k + 1, axis=0)
                targets.append((name, spec["consistency"], target))
            if spec["monotone"] > 0:
                column = zc[:, spec["dim"]]
                mean, std = tf.reduce_mean(column), tf.math.reduce_std(column)
                seed = self._step_seed(0 if step is None else step, 4) + tf.constant([0, 7919], tf.int32) * (k + 1)
                u = tf.random.stateless_uniform(tf.shape(column), seed=seed)
                low = mean - 3.0 * std + u * 5.5 * std
                for value in (low, low + 0.5 * std):
                    step_rows.append(zc * (1.0 - dim_mask) + value[:, None] * dim_mask)
                monotone.append((name, spec["monotone"]))
        decoded = ([swapped] if targets else []) + step_rows
        if len(decoded) == 1:  # the consistency term alone: no batching ops in its graph
            parts = [self.decoder.soft_free_running(decoded[0])[0]]
        else:
            parts = tf.split(self.decoder.soft_free_running(tf.concat(decoded, axis=0))[0], len(decoded), axis=0)
        total = tf.constant(0.0, tf.float32)
        for name, weight, target in targets:
            total += weight * tf.reduce_mean(tf.abs(soft_attribute(parts[0], name) - target))
        step_parts = parts[1:] if targets else parts
        for n, (name, weight) in enumerate(monotone):
            fall = soft_attribute(step_parts[2 * n], name) - soft_attribute(step_parts[2 * n + 1], name)
            total += weight * tf.reduce_mean(tf.nn.relu(fall))
        return total

    def _update_trackers(self, loss, recon, kl, accuracy):
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(recon)
        self.kl_tracker.update_state(kl)
        self.accuracy_tracker.update_state(accuracy)

    def _log_values(self, extra: Dict[str, tf.Tensor]):
        logs = {m.name: m.result() for m in self.metrics}
        logs.update(extra)
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces multi-worker step outputs with a MEAN over axis 0, which needs rank >= 1
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _loss_and_grads(self, tokens, attributes, step):
        """Forward pass, objective and gradients of one (replica) batch."""
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(tokens, training=True, seed=self._step_seed(step, 1))
            eps = tf.random.stateless_normal(tf.shape(z_mean), seed=self._step_seed(step, 3))
            z = z_mean + tf.exp(0.5 * z_log_var) * eps
            loss, recon, kl, beta, accuracy = self._objective(tokens, attributes, z_mean, z_log_var, z, step, True)
            # Keras sums replica gradients: scale so the update is the global-batch mean's gradient
            scaled = loss / float(_num_replicas())
        grads = tape.gradient(scaled, self.trainable_variables)
        return grads, (loss, recon, kl, beta, accuracy)

    def unpack(self, data):
        """(tokens int32 (B, 24), attributes float32 (B, 4)) of a batch.

        A batch is the pair, or both packed side by side in one float32 tensor
        (B, 24 + 4) as ``run_data.pack`` makes them for multi-worker training:
        Keras' ``fit`` averages one sample batch over the replicas to trace the
        model, and MultiWorkerMirroredStrategy reduces a single tensor but not a
        tuple of them.  Token ids are exact in float32.
        """
        if isinstance(data, (tuple, list)):
            tokens, attributes = data
        else:
            ticks = self.codec.ticks_per_measure
            tokens, attributes = data[:, :ticks], data[:, ticks:]
        return tf.cast(tokens, tf.int32), tf.cast(attributes, tf.float32)

    def train_step(self, data):
        tokens, attributes = self.unpack(data)
        step = tf.convert_to_tensor(self.optimizer.iterations)
        compute = self._loss_and_grads
        if self.jit_inner:
            if self._grad_fn is None:
                self._grad_fn = tf.function(self._loss_and_grads, jit_compile=True, autograph=False)
            compute = self._grad_fn
        grads, (loss, recon, kl, beta, accuracy) = compute(tokens, attributes, step)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self._update_trackers(loss, recon, kl, accuracy)
        lr = tf.cast(self.optimizer.learning_rate, tf.float32)
        return self._log_values({"beta": beta, "learning_rate": lr})

    def test_step(self, data):
        tokens, attributes = self.unpack(data)
        step = self.optimizer.iterations if self.optimizer is not None else 0  # for beta and the ramp
        z_mean, z_log_var = self.encoder(tokens, training=False)
        loss, recon, kl, _, accuracy = self._objective(tokens, attributes, z_mean, z_log_var, z_mean, step, False)
        self._update_trackers(loss, recon, kl, accuracy)
        if self.eval_free_running:
            free_tokens, _ = self.decoder.free_running(z_mean)
            self.free_accuracy_tracker.update_state(
                tf.reduce_mean(tf.cast(tf.equal(free_tokens, tokens), tf.float32))
            )
        return self._log_values({})


def resolve_rnn_chains(value: int, xla: bool = True) -> int:
    """``model.rnn_chains``; 0 means: one per CPU core (at most 4) where XLA compiles on a CPU, else 1.

    Splitting the batch into independent recurrences changes no number, only
    how much of the step XLA can spread over CPU cores (``gru.GRU.run``).
    Without XLA (the CPU default, see :func:`use_xla`) TF's
    executor already runs independent operations on both cores, and the
    chains only double the operations: with one chain ``train``'s first step
    came about 5 s sooner and steps ran a few percent faster (BUILD_NOTES,
    "Performance").  On a GPU it is 1.
    """
    if value > 0:
        return int(value)
    if not xla or tf.config.list_physical_devices("GPU"):
        return 1
    import os

    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _cpu_has_bf16() -> bool:
    """True on x86 CPUs with AMX-BF16 or AVX512-BF16 units (Linux /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_matmul_dtype(value: str) -> str:
    """``model.matmul_dtype``; 'auto' means bfloat16 on a CPU with bfloat16 units and no GPU, else float32.

    Elsewhere bfloat16 products are emulated (slower than float32), and GPUs
    already run float32 products fast (TF32).
    """
    if value != "auto":
        return value
    return "bfloat16" if _cpu_has_bf16() and not tf.config.list_physical_devices("GPU") else "float32"


def use_xla(config) -> bool:
    """Whether to XLA-compile training, from ``train.jit_compile`` ('auto', True or False).

    'auto' compiles on a GPU and not on a CPU: on an AVX2 EPYC (no AVX-512) the
    float32 step of ``recommended`` ran at 689-732 examples/s without XLA and
    520-541 with it, and compiled in 25-27 s instead of 114-138 s (the paper
    size: the same speed, 35 s against 106 s); on AMX/AVX512-BF16 CPUs the
    default bfloat16 products run ~1.7x faster in oneDNN's graph kernels than
    in XLA's (BUILD_NOTES, "Performance").  True compiles on a GPU, and on a
    CPU with float32 products (XLA's CPU backend runs bfloat16 products no
    faster than float32 ones).
    """
    value = config.train.jit_compile
    if value is False:
        return False
    if tf.config.list_physical_devices("GPU"):
        return True
    if value == "auto":
        return False
    return resolve_matmul_dtype(config.model.matmul_dtype) == "float32"


def model_kwargs(config) -> dict:
    """MeasureVAE constructor arguments from a complete config (``configs_loader.load_config``/``from_dict``)."""
    m, t = config.model, config.train
    matmul_dtype = resolve_matmul_dtype(m.matmul_dtype)
    return dict(
        z_dim=m.z_dim,
        embed_dim=m.embed_dim,
        enc_hidden=m.enc_hidden,
        enc_layers=m.enc_layers,
        dec_hidden=m.dec_hidden,
        dec_layers=m.dec_layers,
        dropout=m.dropout,
        token_dropout=t.token_dropout,
        mask_hold_at_start=m.mask_hold_at_start,
        rnn_chains=resolve_rnn_chains(m.rnn_chains, use_xla(config)),
        unroll=m.unroll,
        matmul_dtype=matmul_dtype,
        inference_matmul_dtype=resolve_matmul_dtype(m.inference_matmul_dtype),
        regularization={k: dict(v) for k, v in config.regularization.items()},
        beta=t.beta,
        beta_anneal_steps=t.beta_anneal_steps,
        gamma_ramp_steps=t.gamma_ramp_steps,
        gamma_ramp_start_steps=t.gamma_ramp_start_steps,
        consistency_batch=t.consistency_batch,
        seed=t.seed,
        eval_free_running=t.eval_free_running,
    )


def build_model(config) -> MeasureVAE:
    """A MeasureVAE with all weights created, from a config (see configs/common.py)."""
    return MeasureVAE(name="measure_vae", **model_kwargs(config)).build_weights()
