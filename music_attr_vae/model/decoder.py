"""Hierarchical measure decoder: z -> 4 beat vectors -> 6 tokens per beat.

* **Beat level.**  A dense layer maps z to the initial states of a stacked
  beat GRU, which runs 4 steps with z as its input at every step; its outputs
  are the 4 beat vectors.
* **Tick level.**  For each beat, a dense layer maps the beat vector to the
  initial states of a stacked tick GRU, which emits the beat's 6 tokens.  Its
  input at every tick is the embedding of the *previous token of the measure*
  (the shift runs over the whole 24-token sequence, so tick 0 of beat 2 sees
  the last token of beat 1; tick 0 of the measure sees a START id,
  ``START = CODEC.vocab_size``) joined with the beat vector.

Teacher forcing (training, ``teacher_forced``): the previous tokens are known,
so the tick GRU runs the 4 beats *in parallel* as a batch of ``B*4``
sequences of 6 steps.  Free running (inference, ``free_running``): a 24-step
loop over the GRU cells, greedy (``temperature == 0``) or sampled with
Gumbel-max noise hashed from an explicit seed (``counter_uniform``), so a
given (z, temperature, seed) gives the same measure eagerly, under XLA and in
a SavedModel.

**Masking.**  Nothing is padded: every measure is exactly 24 tokens and every
position is scored.  The decoder applies one *grammar mask* (when
``mask_hold_at_start``): HOLD is forbidden on tick 0 of the measure, because
the data never starts a measure with HOLD (a note tied over the barline is
re-struck, see ``data/codec.py``).  The mask sets that logit to a large
negative value in both modes, so free running can never emit it and its
probability is 0 in the teacher-forced distribution.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from music_attr_vae.data.codec import CODEC, MeasureCodec
from music_attr_vae.model.encoder import lookup, stateless_dropout
from music_attr_vae.model.gru import GRU

START = CODEC.vocab_size  # the START input id of decoders built from CODEC
MASKED_LOGIT = -1e9


def _split_states(x, num_layers: int):
    return tf.split(x, num_layers, axis=-1) if num_layers > 1 else [x]


class HierarchicalDecoder(keras.layers.Layer):
    """Beat GRU + tick GRU decoder (see the module docstring).

    Args:
      z_dim: latent size.
      embed_dim: size of the previous-token embedding.
      hidden: units of the beat and tick GRUs.
      num_layers: stacked GRU layers at each level.
      dropout: dropout on the tick inputs and between tick GRU layers (training only).
      token_dropout: probability that a teacher-forced previous token is replaced by START (training
        only), so the tick GRU must lean on the beat vector (from z) rather than copy its inputs.
      mask_hold_at_start: forbid HOLD on tick 0 of the measure.
      chains: independent recurrences the batch is cut into (see ``gru.GRU.run``).
      unroll: unroll the teacher-forced recurrences (free running is always a 24-step unrolled loop).
      matmul_dtype: operand type of the GRU products, 'float32' or 'bfloat16' (see ``gru.matmul``).
    """

    def __init__(
        self,
        z_dim: int,
        embed_dim: int,
        hidden: int,
        num_layers: int = 2,
        dropout: float = 0.0,
        mask_hold_at_start: bool = True,
        chains: int = 1,
        unroll: bool = True,
        matmul_dtype: str = "float32",
        token_dropout: float = 0.0,
        codec: MeasureCodec = CODEC,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.codec = codec
        self.start = codec.vocab_size  # id of the START input token
        self.token_dropout = float(token_dropout)
        self.z_dim = int(z_dim)
        self.embed_dim = int(embed_dim)
        self.hidden = int(hidden)
        self.num_layers = int(num_layers)
        self.dropout = float(dropout)
        self.mask_hold_at_start = bool(mask_hold_at_start)
        self.beat_init = keras.layers.Dense(hidden * num_layers, activation="tanh", name="beat_init")
        # one attribute per layer (not a list): tf.train.Checkpoint tracks attributes, not Keras' lists
        for i in range(num_layers):
            for level in ("beat", "tick"):
                gru = GRU(hidden, chains=chains, unroll=unroll, matmul_dtype=matmul_dtype, name=f"{level}_gru_{i}")
                setattr(self, f"{level}_gru_{i}", gru)
        self.tick_init = keras.layers.Dense(hidden * num_layers, activation="tanh", name="tick_init")
        self.token_embedding = keras.layers.Embedding(codec.vocab_size + 1, embed_dim, name="prev_token_embedding")
        self.output_head = keras.layers.Dense(codec.vocab_size, name="token_logits")

    @property
    def beat_rnns(self):
        return [getattr(self, f"beat_gru_{i}") for i in range(self.num_layers)]

    @property
    def tick_rnns(self):
        return [getattr(self, f"tick_gru_{i}") for i in range(self.num_layers)]

    def build(self, input_shape=None):
        h = self.hidden
        self.beat_init.build((None, self.z_dim))
        self.tick_init.build((None, h))
        self.token_embedding.build((None,))
        for i, rnn in enumerate(self.beat_rnns):
            rnn.build((None, self.codec.beats_per_measure, self.z_dim if i == 0 else h))
        for i, rnn in enumerate(self.tick_rnns):
            rnn.build((None, self.codec.ticks_per_beat, self.embed_dim + h if i == 0 else h))
        self.output_head.build((None, h))
        self.built = True

    # ------------------------------------------------------------------ pieces

    def beat_vectors(self, z):
        """z (B, D) -> beat vectors (B, 4, hidden)."""
        return tf.transpose(self._beat_sequence(z), [1, 0, 2])

    def _beat_sequence(self, z):
        """z (B, D) -> beat vectors, time-major (4, B, hidden)."""
        states = _split_states(self.beat_init(z), self.num_layers)
        first = self.beat_rnns[0]
        # the input is z at every beat: project it once
        x_proj = tf.repeat(first.project(z)[None], self.codec.beats_per_measure, axis=0)
        x = first.run(x_proj, states[0], time_major=True)[0]
        for rnn, state in zip(self.beat_rnns[1:], states[1:]):
            x = rnn.run(rnn.project(x), state, time_major=True)[0]
        return x

    def _split_tick_kernel(self):
        """The first tick GRU's input kernel, split into its token-embedding and beat-vector rows."""
        kernel = self.tick_rnns[0].kernel
        return kernel[: self.embed_dim], kernel[self.embed_dim :]

    def _token_table(self):
        """(VOCAB+1, 3H): embedding of every previous token through the first tick GRU's kernel, + bias."""
        emb_kernel, _ = self._split_tick_kernel()
        return tf.matmul(self.token_embedding.embeddings, emb_kernel) + self.tick_rnns[0].bias[0]

    def _start_mask(self):
        """Boolean (24, VOCAB) grammar mask: True where a logit is forbidden."""
        c = self.codec
        mask = tf.one_hot([c.hold if self.mask_hold_at_start else -1], c.vocab_size, on_value=True, off_value=False)
        rest = tf.zeros([c.ticks_per_measure - 1, c.vocab_size], tf.bool)
        return tf.concat([mask, rest], axis=0)

    def apply_mask(self, logits):
        """Grammar mask on logits (B, 24, V): HOLD on tick 0 -> MASKED_LOGIT."""
        if not self.mask_hold_at_start:
            return logits
        return tf.where(self._start_mask()[None], tf.cast(MASKED_LOGIT, logits.dtype), logits)

    # ------------------------------------------------------------------ modes

    def teacher_forced(self, z, tokens, training=False, seed=None):
        """Logits (B, 24, VOCAB) of every token given the true previous tokens."""
        seed = seed if training else None
        tokens = tf.cast(tokens, tf.int32)
        batch = tf.shape(tokens)[0]
        rows = batch * self.codec.beats_per_measure
        beats = tf.reshape(self.beat_vectors(z), [rows, self.hidden])  # one row per (measure, beat)
        prev = tf.concat([tf.fill([batch, 1], self.start), tokens[:, :-1]], axis=1)  # (B, 24)
        if seed is not None and self.token_dropout > 0.0:
            salted = tf.cast(seed, tf.int32) + tf.constant([0, 7919 * 100], tf.int32)
            drop = tf.random.stateless_uniform(tf.shape(prev), seed=salted) < self.token_dropout
            prev = tf.where(drop, tf.fill(tf.shape(prev), self.start), prev)
        prev = tf.reshape(prev, [rows, self.codec.ticks_per_beat])
        first = self.tick_rnns[0]
        # the tick recurrences run time-major, (6, B*4, ...) (see gru.recurrence)
        if seed is None or self.dropout <= 0.0:
            # [emb(prev), beat] @ W = table[prev] + beat @ W_beat: the beat part once per beat
            _, beat_kernel = self._split_tick_kernel()
            x_proj = lookup(self._token_table(), tf.transpose(prev)) + tf.matmul(beats, beat_kernel)[None]
        else:
            emb = stateless_dropout(self.token_embedding(prev), self.dropout, seed, salt=101)
            beat_in = stateless_dropout(beats, self.dropout, seed, salt=102)
            beat_in = tf.repeat(beat_in[:, None, :], self.codec.ticks_per_beat, axis=1)
            x_proj = tf.transpose(first.project(tf.concat([emb, beat_in], axis=-1)), [1, 0, 2])
        states = _split_states(self.tick_init(beats), self.num_layers)
        x = first.run(x_proj, states[0], time_major=True)[0]
        for i, (rnn, state) in enumerate(zip(self.tick_rnns[1:], states[1:])):
            x = stateless_dropout(x, self.dropout, seed, salt=103 + i)
            x = rnn.run(rnn.project(x), state, time_major=True)[0]
        logits = tf.transpose(self.output_head(x), [1, 0, 2])  # (B*4, 6, VOCAB)
        logits = tf.reshape(logits, [batch, self.codec.ticks_per_measure, self.codec.vocab_size])
        return self.apply_mask(logits)

    def free_running(self, z, temperature=0.0, seed=0):
        """Decode z (B, D) feeding back its own tokens; returns (tokens int32 (B, 24), logits (B, 24, V)).

        ``temperature`` (float scalar, may be a tensor): 0 picks the argmax;
        > 0 samples from softmax(logits / temperature) with noise keyed by
        ``(seed, tick, row)``.
        """
        temperature = tf.cast(temperature, tf.float32)
        seed = tf.cast(seed, tf.int32)
        shape = [tf.shape(z)[0], self.codec.vocab_size]
        ticks = self.codec.ticks_per_measure
        # the noise of all 24 ticks in one cond (greedy decoding does not pay for it); one cond per
        # tick would put 24 copies of the hash in the graph, which XLA compiles on the first call
        noise = tf.unstack(tf.cond(temperature > 0.0, lambda: gumbel_noise(shape, seed, tf.range(ticks)),
                                   lambda: tf.zeros([ticks, *shape])), num=ticks)

        def pick(logits, tick, table):
            token = _choose(logits, temperature, noise[tick])
            return lookup(table, token), token

        return self._free_loop(z, pick)

    def soft_free_running(self, z, temperature=1.0):
        """Differentiable free running: feed back the *expected* embedding of each tick's distribution.

        Every tick's input is ``softmax(logits / temperature) @ table`` instead
        of the table row of a chosen token, so gradients reach the decoder
        through its own outputs.  Returns (probabilities (B, 24, V), logits).
        For one-hot distributions it is exactly ``free_running``; it serves the
        consistency loss (``model/soft_attributes.py``).
        """
        temperature = tf.cast(temperature, tf.float32)

        def pick(logits, tick, table):
            probs = tf.nn.softmax(logits / temperature, axis=-1)
            return tf.matmul(probs, table[:self.codec.vocab_size]), probs

        return self._free_loop(z, pick)

    def _free_loop(self, z, pick):
        """The 24-tick loop; ``pick(logits, tick, table)`` -> (next tick's projected input, emitted output).

        Per tick and layer: one recurrent product, and below the top layer one
        input product for the layer above.  Taking a layer's two products of
        the same state as one product twice as wide (``h @ [W_next | U]``) was
        measured and is not done: no faster at 256 rows and ~15% slower at 8
        (BUILD_NOTES "Results, 0.11.0").
        """
        batch = tf.shape(z)[0]
        beats = self._beat_sequence(z)  # (4, B, hidden): a beat's vectors are a contiguous slice
        table = self._token_table()
        _, beat_kernel = self._split_tick_kernel()
        hold_at_start = self._start_mask()[0][None]
        rnns = self.tick_rnns
        # every weight the loop uses, read once: per tick the graph holds only the arithmetic
        recurrent = [rnn.recurrent_operands() for rnn in rnns]
        inputs = [rnn.input_operands() for rnn in rnns]
        head_kernel, head_bias = tf.convert_to_tensor(self.output_head.kernel), tf.convert_to_tensor(self.output_head.bias)
        token_in = lookup(table, tf.fill([batch], self.start))
        outputs, out_logits = [], []
        for b in range(self.codec.beats_per_measure):
            beat = beats[b]
            beat_proj = tf.matmul(beat, beat_kernel)
            states = _split_states(self.tick_init(beat), self.num_layers)
            for t in range(self.codec.ticks_per_beat):
                tick = b * self.codec.ticks_per_beat + t
                x_proj = token_in + beat_proj
                for i, rnn in enumerate(rnns):
                    states[i] = rnn.step(x_proj, states[i], recurrent[i])
                    if i + 1 < len(rnns):
                        x_proj = rnns[i + 1].project(states[i], inputs[i + 1])
                logits = tf.matmul(states[-1], head_kernel) + head_bias
                if self.mask_hold_at_start and tick == 0:
                    logits = tf.where(hold_at_start, MASKED_LOGIT, logits)
                token_in, out = pick(logits, tick, table)
                outputs.append(out)
                out_logits.append(logits)
        return tf.stack(outputs, axis=1), tf.stack(out_logits, axis=1)


def _hash32(x):
    """A 32-bit integer mixer (the "lowbias32" constants); identical under XLA and TF kernels."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def counter_uniform(shape, seed, ticks):
    """Uniforms in (0, 1) of shape (len(ticks), *shape), a pure function of (seed, tick, position).

    TF's stateless random ops draw different numbers under XLA than in plain
    graphs, so a sample would depend on whether the decoder was compiled;
    this counter-based hash does not, which keeps ``decode(z, T, seed)`` the
    same eagerly, in a SavedModel and under ``jit_compile``.  Tick ``t``'s
    slice depends only on ``(seed, t)``, not on the other ticks asked for.
    """
    count = tf.reshape(tf.range(tf.reduce_prod(shape), dtype=tf.int32), shape)
    ticks = tf.cast(tf.reshape(ticks, [-1]), tf.uint32)
    key = _hash32(tf.bitwise.bitwise_xor(tf.cast(seed, tf.uint32), _hash32(ticks + 0x9E3779B9)))
    key = tf.reshape(key, tf.concat([[-1], tf.ones_like(tf.shape(count))], axis=0))
    bits = _hash32(tf.bitwise.bitwise_xor(tf.cast(count, tf.uint32)[None] * tf.constant(0x9E3779B1, tf.uint32), key))
    return (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) + 0.5) / float(1 << 24)


def gumbel_noise(shape, seed, ticks):
    """Gumbel noise (len(ticks), *shape) from ``counter_uniform``."""
    return -tf.math.log(-tf.math.log(counter_uniform(shape, seed, ticks)))


def _choose(logits, temperature, noise):
    """Argmax when temperature <= 0, else a sample from softmax(logits / temperature).

    Sampling is the Gumbel-max trick: the argmax of ``logits / temperature +
    noise`` with ``noise`` from ``gumbel_noise`` (same shape as ``logits``).
    """
    sampled = tf.argmax(logits / tf.maximum(temperature, 1e-6) + noise, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0.0, sampled, tf.argmax(logits, axis=-1, output_type=tf.int32))
