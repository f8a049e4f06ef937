"""The serving functions of an export: a tf.Module whose functions become the SavedModel's signatures.

:func:`build_serving_module` puts together three pieces: :class:`GraphChecks`
(the graph asserts that refuse bad or oversized input, naming what is
allowed), :func:`model_calls` (one traced encoder and one decoder, shared by
every signature) and the signatures themselves, in two groups
(:func:`_codec_signatures`: encode / decode / sample / attributes / teacher
forcing / metadata; :func:`_attribute_signatures`: traverse, traverse_z and
set_attribute).  ``serving/export.py`` describes every signature.
"""

from __future__ import annotations

import json

import numpy as np

from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import MeasureCodec
from music_attr_vae.serving.limits import LIMITS
from music_attr_vae.serving.maps import MAP_KNOTS

SIGNATURE_NAMES = (
    "metadata",
    "encode",
    "decode",
    "sample",
    "traverse",
    "traverse_z",
    "set_attribute",
    "attributes",
    "teacher_forced_nll",
    "reference_measures",
)

# Batch sizes the XLA decoder is compiled for: a batch is padded up to the
# smallest bucket that holds it, and larger batches run in chunks of the
# largest, so a process compiles at most len(DECODE_BUCKETS) programs instead of
# one per batch size (each compile takes seconds).
DECODE_BUCKETS = (8, 64, 256)
# The most measures a request runs without XLA in a process that answers once
# (``client.answer_once`` sets the module's ``plain_max_rows`` to it; see ``model_calls``).
PLAIN_MAX_ROWS = 8


def _interp(x, xp, fp):
    """np.interp in TF for 1-D increasing ``xp``; ``x`` of any shape, clamped to the ends."""
    import tensorflow as tf

    flat = tf.reshape(x, [-1])
    flat = tf.clip_by_value(flat, xp[0], xp[-1])
    n = tf.shape(xp)[0]
    hi = tf.clip_by_value(tf.searchsorted(xp, flat, side="right"), 1, n - 1)
    lo = hi - 1
    x0, x1 = tf.gather(xp, lo), tf.gather(xp, hi)
    y0, y1 = tf.gather(fp, lo), tf.gather(fp, hi)
    w = tf.where(x1 > x0, (flat - x0) / tf.maximum(x1 - x0, 1e-12), 0.0)
    return tf.reshape(y0 + w * (y1 - y0), tf.shape(x))


def _bucketed_decode(decode_fixed, z, temperature, seed, z_dim: int, ticks: int):
    """Run ``decode_fixed`` on ``z`` [N, D] padded to a bucket size, chunk by chunk.

    Each chunk samples with its own seed (``seed + chunk``), so chunks of a
    large batch are not copies of each other's random draws.
    """
    import tensorflow as tf

    n = tf.shape(z)[0]
    bucket = tf.constant(DECODE_BUCKETS[-1])
    for size in reversed(DECODE_BUCKETS[:-1]):
        bucket = tf.where(n <= size, size, bucket)
    chunks = tf.maximum((n + bucket - 1) // bucket, 1)  # an empty batch still runs one (padded) chunk
    padded = tf.pad(z, [[0, chunks * bucket - n], [0, 0]])
    parts = tf.reshape(padded, [chunks, bucket, z_dim])
    tokens = tf.map_fn(
        lambda args: decode_fixed(args[0], temperature, seed + args[1]),
        (parts, tf.range(chunks)),
        fn_output_signature=tf.TensorSpec([None, ticks], tf.int32),
    )
    return tf.reshape(tokens, [-1, ticks])[:n]


def set_dim(z, dim, values, z_dim: int):
    """z [N,D], values [N] -> z with column ``dim`` replaced."""
    import tensorflow as tf

    one_hot = tf.one_hot(dim, z_dim, dtype=z.dtype)
    return z * (1.0 - one_hot) + values[:, None] * one_hot


class Specs:
    """The TensorSpecs of the signatures' inputs."""

    def __init__(self, z_dim: int, codec: MeasureCodec):
        import tensorflow as tf

        self.tokens = tf.TensorSpec([None, codec.ticks_per_measure], tf.int32, name="tokens")
        self.z = tf.TensorSpec([None, z_dim], tf.float32, name="z")
        self.temperature = tf.TensorSpec([], tf.float32, name="temperature")
        self.seed = tf.TensorSpec([], tf.int32, name="seed")
        self.attribute = tf.TensorSpec([], tf.string, name="attribute")
        self.values = tf.TensorSpec([None], tf.float32, name="values")
        self.n = tf.TensorSpec([], tf.int32, name="n")
        self.target = tf.TensorSpec(None, tf.float32, name="target")


class GraphChecks:
    """Graph asserts on the signatures' inputs; each failure names what is allowed."""

    def __init__(self, z_dim: int, maps: dict, codec: MeasureCodec):
        import tensorflow as tf

        self.tf = tf
        self.codec = codec
        self.z_dim = z_dim
        names = list(maps.keys())
        dims = [int(maps[n]["dim"]) for n in names]
        described = ", ".join(f"{n} (dim {d})" for n, d in zip(names, dims)) or "none"
        self.attr_msg = (
            f"unknown attribute: use a regularised attribute of this model [{described}] "
            f"or a latent dim number 0..{z_dim - 1} written as a string"
        )
        self.map_msg = f"set_attribute needs a regularised attribute of this model: [{described}]"
        self.token_msg = (
            f"tokens must lie in 0..{codec.vocab_size - 1} "
            f"(0..{codec.num_pitches - 1} = MIDI {codec.min_pitch}..{codec.max_pitch} onsets, "
            f"{codec.rest} = REST, {codec.hold} = HOLD)"
        )
        self.names = tf.constant(names if names else [""], tf.string)
        self.dims = tf.constant(dims if names else [-1], tf.int32)

    def at_most(self, count, limit_name: str, what: str):
        """An assert that ``count`` (a scalar) is within ``LIMITS[limit_name]``."""
        tf, limit = self.tf, LIMITS[limit_name]
        return tf.debugging.assert_less_equal(
            tf.cast(count, tf.int64), tf.constant(limit, tf.int64),
            message=f"{what} must be <= {limit_name} = {limit} per call",
        )

    def batch(self, x, what):
        with self.tf.control_dependencies([self.at_most(self.tf.shape(x)[0], "MAX_BATCH", f"the number of {what}")]):
            return self.tf.identity(x)

    def tokens(self, tokens):
        tf = self.tf
        tokens = self.batch(tokens, "measures")
        with tf.control_dependencies([
            tf.debugging.assert_greater_equal(tokens, 0, message=self.token_msg),
            tf.debugging.assert_less(tokens, self.codec.vocab_size, message=self.token_msg),
        ]):
            return tf.identity(tokens)

    def finite(self, x, what):
        return self.tf.debugging.check_numerics(x, f"{what} must be finite (found NaN or Inf)")

    def latents(self, z):
        return self.finite(self.batch(z, "latent codes"), "z")

    def temperature(self, temperature):
        tf = self.tf
        temperature = self.finite(temperature, "temperature")
        with tf.control_dependencies(
            [tf.debugging.assert_greater_equal(temperature, 0.0, message="temperature must be >= 0")]
        ):
            return tf.identity(temperature)

    def _match(self, attribute):
        return self.tf.equal(self.names, attribute) & self.tf.not_equal(attribute, "")

    def resolve_dim(self, attribute):
        """The latent dim of a regularised attribute name or of a dim number written as a string."""
        tf = self.tf
        match = self._match(attribute)
        is_name = tf.reduce_any(match)
        is_number = tf.strings.regex_full_match(attribute, r"[0-9]{1,6}")
        number = tf.strings.to_number(tf.where(is_number, attribute, "0"), tf.int32)
        ok = is_name | (is_number & (number < self.z_dim))
        with tf.control_dependencies([tf.debugging.Assert(ok, [self.attr_msg, "got:", attribute])]):
            index = tf.argmax(tf.cast(match, tf.int32), output_type=tf.int32)
            return tf.where(is_name, tf.gather(self.dims, index), number)

    def resolve_map(self, attribute):
        """The index (into the fitted maps) of a regularised attribute name."""
        tf = self.tf
        match = self._match(attribute)
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_any(match), [self.map_msg, "got:", attribute])]):
            return tf.argmax(tf.cast(match, tf.int32), output_type=tf.int32)


def model_calls(model, specs: Specs, z_dim: int, jit_compile: bool, plain_max_rows):
    """(encode(tokens) -> (z_mean, z_log_var), decode(z, temperature, seed) -> tokens), traced once each.

    Every signature calls these, so the SavedModel holds a single copy of the
    24-step decoder graph, which keeps it small and quick to load.

    With ``jit_compile``, requests of more than ``plain_max_rows`` measures
    (a scalar int32 variable, 0 unless a client sets it) run that graph compiled
    by XLA (``decode_xla`` calls it; bucketed, see ``_bucketed_decode``) and
    smaller ones run it as a plain graph.  XLA's first call in a process costs
    1-2 s even when the persistent cache holds the program (TensorFlow lowers the
    graph to HLO to find the cache key), which is most of what a one-shot
    ``generate`` or ``edit`` asks of the decoder, while later calls of a few
    measures run faster under XLA (BUILD_NOTES "Results, 0.10.0").  So a
    long-lived client keeps 0 and a one-shot command sets ``PLAIN_MAX_ROWS``.
    """
    import tensorflow as tf

    @tf.function(input_signature=[specs.z, specs.temperature, specs.seed], autograph=False)
    def decode_core(z, temperature, seed):
        return tf.cast(model.decode(z, temperature=temperature, seed=seed), tf.int32)

    @tf.function(input_signature=[specs.z, specs.temperature, specs.seed], autograph=False, jit_compile=True)
    def decode_xla(z, temperature, seed):
        return decode_core(z, temperature, seed)

    def model_decode(z, temperature, seed):
        if not jit_compile:
            return decode_core(z, temperature, seed)
        ticks = model.codec.ticks_per_measure
        return tf.cond(
            tf.shape(z)[0] <= plain_max_rows,
            lambda: decode_core(z, temperature, seed),
            lambda: _bucketed_decode(decode_xla, z, temperature, seed, z_dim, ticks),
        )

    @tf.function(input_signature=[specs.tokens], autograph=False)
    def model_encode(tokens):
        z_mean, z_log_var = model.encode(tokens)
        return tf.cast(z_mean, tf.float32), tf.cast(z_log_var, tf.float32)

    return model_encode, model_decode


def _codec_signatures(model, calls, specs: Specs, check: GraphChecks, maps: dict, sample_tokens, metadata) -> dict:
    """metadata, encode, decode, sample, attributes, teacher_forced_nll and reference_measures."""
    import tensorflow as tf

    encode_core, decode_core = calls
    z_dim = check.z_dim
    metadata_json = tf.constant(json.dumps(metadata))
    sample_tokens_t = tf.constant(np.asarray(sample_tokens, np.int32).reshape(-1, model.codec.ticks_per_measure))
    sample_attrs_t = tf.constant(attrs.compute_all(sample_tokens).reshape(-1, len(attrs.ATTRIBUTE_NAMES)))
    # the regularised dims' marginals, drawn by ``sample`` (see export.py's docstring)
    quantile_levels = tf.constant(np.linspace(0.0, 1.0, MAP_KNOTS), tf.float32)
    marginals = [(int(m["dim"]), tf.constant(m["quantiles"], tf.float32)) for m in maps.values()]

    @tf.function(input_signature=[])
    def metadata_fn():
        return {"json": metadata_json}

    @tf.function(input_signature=[specs.tokens])
    def encode(tokens):
        z_mean, z_log_var = encode_core(check.tokens(tokens))
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    @tf.function(input_signature=[specs.z, specs.temperature, specs.seed])
    def decode(z, temperature, seed):
        return {"tokens": decode_core(check.latents(z), check.temperature(temperature), seed)}

    @tf.function(input_signature=[specs.n, specs.seed, specs.temperature])
    def sample(n, seed, temperature):
        with tf.control_dependencies([tf.debugging.assert_non_negative(n, message="n must be >= 0"),
                                      check.at_most(n, "MAX_SAMPLE", "n")]):
            z = tf.random.stateless_normal(tf.stack([n, z_dim]), seed=tf.stack([seed, 7919]))
            u = tf.random.stateless_uniform(tf.stack([n, max(1, len(marginals))]), seed=tf.stack([seed, 7920]))
        for i, (dim, quantiles) in enumerate(marginals):
            z = set_dim(z, dim, _interp(u[:, i], quantile_levels, quantiles), z_dim)
        return {"tokens": decode_core(z, check.temperature(temperature), seed), "z": z}

    @tf.function(input_signature=[specs.tokens])
    def attributes_fn(tokens):
        return {"values": attrs.tf_compute_all(check.tokens(tokens))}

    @tf.function(input_signature=[specs.tokens])
    def teacher_forced_nll(tokens):
        tokens = check.tokens(tokens)
        z, _ = encode_core(tokens)
        logits = tf.cast(model.teacher_forced_logits(z, tokens), tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens, logits=logits)
        hit = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tokens), tf.float32)
        return {"nll": tf.reduce_sum(ce, -1), "accuracy": tf.reduce_mean(hit, -1)}

    @tf.function(input_signature=[])
    def reference_measures():
        return {"tokens": sample_tokens_t, "attributes": sample_attrs_t}

    return {"metadata": metadata_fn, "encode": encode, "decode": decode, "sample": sample,
            "attributes": attributes_fn, "teacher_forced_nll": teacher_forced_nll,
            "reference_measures": reference_measures}


def _attribute_signatures(calls, specs: Specs, check: GraphChecks, maps: dict) -> dict:
    """traverse, traverse_z and set_attribute: decoding with one latent dim set."""
    import tensorflow as tf

    encode_core, decode_core = calls
    z_dim, ticks = check.z_dim, check.codec.ticks_per_measure
    names = list(maps)
    map_values = tf.constant(np.array([maps[n]["value"] for n in names] or [np.zeros(MAP_KNOTS)], np.float32))
    map_z = tf.constant(np.array([maps[n]["z"] for n in names] or [np.zeros(MAP_KNOTS)], np.float32))
    attr_columns = tf.constant([attrs.attribute_index(n) for n in names] or [0], tf.int32)

    def traverse_from_z(z, attribute, values, temperature, seed):
        dim = check.resolve_dim(attribute)
        values = check.finite(values, "values")
        n, k = tf.shape(z)[0], tf.shape(values)[0]
        with tf.control_dependencies([
            check.at_most(k, "MAX_VALUES", "the number of values (K)"),
            check.at_most(tf.cast(n, tf.int64) * tf.cast(k, tf.int64), "MAX_GRID", "measures x values (N*K)"),
        ]):
            grid = tf.repeat(z, k, axis=0)  # [N*K, D], measure-major
        grid = set_dim(grid, dim, tf.tile(values, [n]), z_dim)
        tokens = decode_core(grid, check.temperature(temperature), seed)
        return {"tokens": tf.reshape(tokens, [n, k, ticks]), "z": tf.reshape(grid, [n, k, z_dim])}

    @tf.function(input_signature=[specs.tokens, specs.attribute, specs.values, specs.temperature, specs.seed])
    def traverse(tokens, attribute, values, temperature, seed):
        z, _ = encode_core(check.tokens(tokens))
        return traverse_from_z(z, attribute, values, temperature, seed)

    @tf.function(input_signature=[specs.z, specs.attribute, specs.values, specs.temperature, specs.seed])
    def traverse_z(z, attribute, values, temperature, seed):
        return traverse_from_z(check.latents(z), attribute, values, temperature, seed)

    @tf.function(input_signature=[specs.tokens, specs.attribute, specs.target, specs.temperature, specs.seed])
    def set_attribute(tokens, attribute, target, temperature, seed):
        tokens = check.tokens(tokens)
        index = check.resolve_map(attribute)
        n = tf.shape(tokens)[0]
        target = tf.reshape(check.finite(target, "target"), [-1])
        size_ok = tf.logical_or(tf.equal(tf.size(target), 1), tf.equal(tf.size(target), n))
        with tf.control_dependencies(
            [tf.debugging.Assert(size_ok, ["target must be a scalar or have one value per measure"])]
        ):
            target = tf.broadcast_to(target, [n])
        xp, fp = tf.gather(map_values, index), tf.gather(map_z, index)
        predicted = tf.clip_by_value(target, xp[0], xp[-1])
        z, _ = encode_core(tokens)
        z = set_dim(z, tf.gather(check.dims, index), _interp(predicted, xp, fp), z_dim)
        new_tokens = decode_core(z, check.temperature(temperature), seed)
        column = tf.gather(attr_columns, index)
        return {
            "tokens": new_tokens,
            "z": z,
            "predicted": predicted,
            "attribute_before": tf.gather(attrs.tf_compute_all(tokens), column, axis=1),
            "attribute_after": tf.gather(attrs.tf_compute_all(new_tokens), column, axis=1),
        }

    return {"traverse": traverse, "traverse_z": traverse_z, "set_attribute": set_attribute}


def build_serving_module(
    model, config, maps: dict, sample_tokens: np.ndarray, metadata: dict, jit_compile: bool = False
):
    """A tf.Module exposing the serving functions of ``model`` (see export.py's docstring).

    With ``jit_compile`` the free-running decoder (the 24-step loop that
    dominates every signature's time) is compiled with XLA as one cluster, for
    the batch sizes of ``DECODE_BUCKETS``, for requests of more than
    ``module.plain_max_rows`` measures (a variable, 0 as exported; see
    ``model_calls``); the input checks stay outside it, because XLA cannot run
    assertions.
    """
    import tensorflow as tf

    z_dim = int(config.model.z_dim)
    specs = Specs(z_dim, model.codec)
    check = GraphChecks(z_dim, maps, model.codec)
    plain_max_rows = tf.Variable(0, dtype=tf.int32, trainable=False, name="plain_max_rows")
    calls = model_calls(model, specs, z_dim, jit_compile, plain_max_rows)
    functions = _codec_signatures(model, calls, specs, check, maps, sample_tokens, metadata)
    functions.update(_attribute_signatures(calls, specs, check, maps))
    assert set(functions) == set(SIGNATURE_NAMES)
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.plain_max_rows = plain_max_rows
    for name in SIGNATURE_NAMES:
        setattr(module, name, functions[name])
    return module
