"""Measure encoder: tokens (B, 24) -> q(z | measure) = N(z_mean, exp(z_log_var)).

Token embedding -> ``num_layers`` bidirectional GRUs (the last one keeps only
its final forward and backward states) -> two dense heads.  Every measure is
exactly 24 tokens, so nothing is padded and no mask is needed.

The GRUs (``gru.BiGRU``) are unrolled and run both directions in one loop;
the first layer's input projection is a lookup in the embedding table
projected by its input kernel (embedding then kernel is one linear map), so
the only per-step products are the recurrent ones.  See ``gru.py``.

Randomness (dropout, and the reparameterisation noise in the model) is
*stateless*: it is drawn from an explicit ``seed`` tensor that the model
derives from the training step and the replica id.  That keeps runs
reproducible, gives a resumed run exactly the noise an uninterrupted run
would have drawn, and needs no random-state variable to be synchronised under
a distribution strategy.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from music_attr_vae.data.codec import CODEC, MeasureCodec
from music_attr_vae.model.gru import BiGRU


def stateless_dropout(x, rate: float, seed, salt: int):
    """Inverted dropout with noise from ``seed`` (int32 [2]) mixed with ``salt``.

    ``salt`` distinguishes the call sites that share one step seed.  A no-op
    when ``rate`` is 0 or ``seed`` is None (inference).
    """
    if rate <= 0.0 or seed is None:
        return x
    keep = 1.0 - rate
    seed = tf.cast(seed, tf.int32) + tf.constant([0, 7919], tf.int32) * salt
    noise = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)
    return tf.where(noise < keep, x / keep, tf.zeros_like(x))


def lookup(table, ids):
    """``table[ids]`` for a (V, C) table, as a one-hot matrix product (ids (...) -> (..., C)).

    With a vocabulary this small the product costs little, and its gradient is
    another product instead of the scatter-add a gather needs.
    """
    return tf.tensordot(tf.one_hot(ids, table.shape[0], dtype=table.dtype), table, axes=1)


class Encoder(keras.layers.Layer):
    """Bidirectional-GRU measure encoder.

    Args:
      z_dim: latent size.
      embed_dim: token embedding size.
      hidden: units of each GRU direction.
      num_layers: stacked bidirectional GRUs.
      dropout: dropout rate on the embeddings and between GRU layers (training only).
      chains: independent recurrences the batch is cut into (see ``gru.GRU.run``).
      unroll: unroll the recurrences (see ``gru.py``).
      matmul_dtype: operand type of the GRU products, 'float32' or 'bfloat16' (see ``gru.matmul``).
    """

    def __init__(
        self,
        z_dim: int,
        embed_dim: int,
        hidden: int,
        num_layers: int = 2,
        dropout: float = 0.0,
        chains: int = 1,
        unroll: bool = True,
        matmul_dtype: str = "float32",
        codec: MeasureCodec = CODEC,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.codec = codec
        self.z_dim = int(z_dim)
        self.embed_dim = int(embed_dim)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.embedding = keras.layers.Embedding(codec.vocab_size, embed_dim, name="token_embedding")
        self.num_layers = int(num_layers)
        # one attribute per layer (not a list): tf.train.Checkpoint tracks attributes, not Keras' lists
        for i in range(num_layers):
            setattr(
                self,
                f"bigru_{i}",
                BiGRU(
                    hidden, return_sequences=i < num_layers - 1, chains=chains, unroll=unroll,
                    matmul_dtype=matmul_dtype, name=f"bigru_{i}",
                ),
            )
        self.mean_head = keras.layers.Dense(z_dim, name="z_mean")
        self.log_var_head = keras.layers.Dense(z_dim, name="z_log_var")

    @property
    def rnns(self):
        return [getattr(self, f"bigru_{i}") for i in range(self.num_layers)]

    def build(self, input_shape=None):
        self.embedding.build((None, self.codec.ticks_per_measure))
        in_dim = self.embed_dim
        for rnn in self.rnns:
            rnn.build((None, self.codec.ticks_per_measure, in_dim))
            in_dim = 2 * self.hidden
        self.mean_head.build((None, in_dim))
        self.log_var_head.build((None, in_dim))
        self.built = True

    def call(self, tokens, training=False, seed=None):
        """tokens int (B, 24) -> (z_mean, z_log_var), float32 (B, z_dim) each."""
        seed = seed if training else None
        tokens = tf.cast(tokens, tf.int32)
        first = self.rnns[0]
        # the recurrences run time-major, (24, B, ...): a step is a contiguous block (see gru.recurrence)
        if seed is None or self.dropout <= 0.0:
            # embedding followed by the input kernel = a lookup in the projected table
            ids = tf.transpose(tokens)
            x_proj = [lookup(table, ids) for table in first.project(self.embedding.embeddings)]
        else:
            emb = stateless_dropout(self.embedding(tokens), self.dropout, seed, salt=1)
            x_proj = first.project(tf.transpose(emb, [1, 0, 2]))
        x = first.call_projected(x_proj, time_major=True)
        for i, rnn in enumerate(self.rnns[1:]):
            x = stateless_dropout(x, self.dropout, seed, salt=i + 2)
            x = rnn.call_projected(rnn.project(x), time_major=True)
        return self.mean_head(x), self.log_var_head(x)
