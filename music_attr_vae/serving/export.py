"""Export a trained MeasureVAE as a self-describing TensorFlow SavedModel.

The SavedModel is meant to be used with no training code (and no
``music_attr_vae`` package) in sight: ``tf.saved_model.load(DIR)`` gives an
object whose functions take and return plain tensors, and whose
``metadata()`` tells a client everything else (vocabulary, attribute names and
dims, the fitted attribute maps, the config, the package version).

Signatures (all also callable as ``loaded.<name>(...)``; every input has an
explicit dtype and shape, and bad values fail with an ``InvalidArgumentError``
whose message says what is allowed):

``metadata() -> {json: string []}``
    The JSON document described in :func:`build_metadata`.
``encode(tokens int32 [N,24]) -> {z_mean, z_log_var: float32 [N,D]}``
``decode(z float32 [N,D], temperature float32 [], seed int32 []) -> {tokens int32 [N,24]}``
    Free-running decoding; greedy (argmax) when ``temperature`` is 0, otherwise
    sampling at that temperature, reproducible for a given ``seed``.
``sample(n int32 [], seed int32 [], temperature float32 []) -> {tokens [n,24], z [n,D]}``
    ``z`` drawn with ``seed``, then decoded: the unregularised dims from the
    N(0, I) prior, each regularised dim from the distribution of the encoded
    reference measures on that dim (its ``MAP_KNOTS`` stored quantiles,
    inverse-CDF sampling).  The regularization shapes those dims freely (only
    differences count), so they need not be N(0, 1): a RHY-PR model can keep
    its pitch-range dim around 5, where prior draws would decode to silence.
``traverse(tokens int32 [N,24], attribute string [], values float32 [K], temperature, seed)``
``traverse_z(z float32 [N,D], attribute string [], values float32 [K], temperature, seed)``
    ``-> {tokens int32 [N,K,24], z float32 [N,K,D]}``: the measure's latent
    code (``z_mean`` of the tokens, or ``z``) with one dim set to each of the
    K values in turn.  ``attribute`` is a regularised attribute name (its dim
    is used) or a dim number written as a string, e.g. ``"5"``.
``set_attribute(tokens int32 [N,24], attribute string [], target float32 [] or [N], temperature, seed)``
    ``-> {tokens, z, predicted [N], attribute_before [N], attribute_after [N]}``:
    moves each measure's attribute toward ``target`` by setting the
    attribute's dim of ``z_mean`` to the value that the monotone map fitted at
    export time assigns to the target (targets outside the fitted value range
    are clamped to it; ``predicted`` is the clamped target).
    ``attribute_before``/``attribute_after`` are the attribute computed on the
    input and output tokens.
``attributes(tokens int32 [N,24]) -> {values float32 [N,4]}``
    All four attributes, columns in ``metadata()["attribute_names"]`` order.
``teacher_forced_nll(tokens int32 [N,24]) -> {nll float32 [N], accuracy float32 [N]}``
    Reconstruction NLL (nats, summed over the 24 ticks) and token accuracy of
    each measure decoded from its ``z_mean`` with teacher forcing.
``reference_measures() -> {tokens int32 [M,24], attributes float32 [M,4]}``
    A small sample of the measures the maps were fitted on, for demos.

The attribute maps: for each regularised attribute, the attribute of the
``reference_tokens`` (or, without them, of measures decoded from prior samples)
is regressed isotonically on ``z_mean[:, dim]``; the fit is stored as
``MAP_KNOTS`` strictly increasing attribute values and the dim values that
produce them, so setting an attribute is a table lookup and a linear
interpolation.

Limits: one request may ask for at most ``MAX_BATCH`` measures per call
(``N``), ``MAX_SAMPLE`` samples, ``MAX_VALUES`` traversal values (``K``) and
``MAX_GRID`` decoded measures per traversal (``N * K``); a larger request
fails at once, before anything is allocated, with an ``InvalidArgumentError``
naming the limit.  The values are in ``metadata()["limits"]``.
``bench/bench_limits.py`` measures the largest allowed ``sample`` and the
refused ones (``sample(n=10**7)`` used to take 5.7 GB).

Speed: every signature calls one shared decoder function (one copy of the
24-step graph in the SavedModel, so it loads in about 2 s), compiled with XLA
for the batch sizes of ``DECODE_BUCKETS`` unless exported with
``jit_compile=False``; see ``bench/bench_serving.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional

import numpy as np

from music_attr_vae import fileio
from music_attr_vae.data import attributes as attrs
from music_attr_vae.data import measures

MAP_KNOTS = 65
MAX_FIT_MEASURES = 20000
PRIOR_FIT_SAMPLES = 4096
REFERENCE_SAMPLE = 256
FIT_BATCH = 512
FORMAT_VERSION = 1

# Size limits of one request (see "Limits" in the module docstring); stored in the metadata too.
MAX_BATCH = 65536  # measures (N) per encode/decode/attributes/teacher_forced_nll/traverse/set_attribute call
MAX_SAMPLE = 65536  # sample's n
MAX_VALUES = 1024  # traverse's values (K)
MAX_GRID = 65536  # measures traverse decodes in one call (N * K)
LIMITS = {"MAX_BATCH": MAX_BATCH, "MAX_SAMPLE": MAX_SAMPLE, "MAX_VALUES": MAX_VALUES, "MAX_GRID": MAX_GRID}


class ExportError(RuntimeError):
    """The SavedModel could not be written (the previous export, if any, is kept)."""


def package_version() -> str:
    """Version of the installed package (falls back to the source tree's setup.py)."""
    try:
        from importlib import metadata

        return metadata.version("music-attr-vae")
    except Exception:  # not installed: running from a checkout
        import music_attr_vae

        return getattr(music_attr_vae, "__version__", "unknown")


def regularized_dims(config) -> Dict[str, int]:
    """{attribute name: latent dim} of the regularised attributes, in ATTRIBUTE_NAMES order."""
    reg = config.get("regularization", None) or {}
    out = {}
    for name in attrs.ATTRIBUTE_NAMES:
        if name in reg:
            out[name] = int(reg[name]["dim"])
    unknown = set(reg.keys()) - set(attrs.ATTRIBUTE_NAMES)
    if unknown:
        raise ValueError(f"config.regularization names unknown attributes {sorted(unknown)}")
    return out


# ---------------------------------------------------------------- fitting


def _batched(fn, array: np.ndarray, batch: int = FIT_BATCH) -> List:
    return [fn(array[i : i + batch]) for i in range(0, len(array), batch)]


def fit_monotone_map(z: np.ndarray, values: np.ndarray, knots: int = MAP_KNOTS) -> dict:
    """Isotonic fit of an attribute against one latent dim, stored for inversion.

    Returns ``{"value": [...], "z": [...], "quantiles": [...], "direction": +1|-1,
    "value_range": [lo, hi], "z_range": [z at lo, z at hi], "spearman": r, "count": n}``
    (``quantiles``: ``knots`` evenly spaced quantiles of ``z``, for ``sample``) where ``value`` is a
    strictly increasing grid of ``knots`` attribute values spanning the fitted
    range and ``z`` the dim values mapping to them (monotone, increasing when
    ``direction`` is +1).  Plateaus of the isotonic fit are represented by their
    midpoints, so interpolation between them moves smoothly along the dim.
    """
    from scipy import stats
    from sklearn.isotonic import IsotonicRegression

    z = np.asarray(z, np.float64)
    values = np.asarray(values, np.float64)
    order = np.argsort(z, kind="stable")
    z, values = z[order], values[order]
    spearman = float(stats.spearmanr(z, values)[0]) if np.ptp(values) > 0 and np.ptp(z) > 0 else 0.0
    direction = -1 if spearman < 0 else 1
    fitted = IsotonicRegression(increasing=direction > 0).fit_transform(z, values)
    levels, first = np.unique(fitted, return_index=True)
    last = len(fitted) - 1 - np.unique(fitted[::-1], return_index=True)[1]
    mids = (z[first] + z[last]) / 2.0
    lo, hi = float(levels[0]), float(levels[-1])
    if len(levels) == 1:  # flat: the dim tells nothing; stay at the median
        grid = np.linspace(lo, lo + 1e-6, knots)
        z_grid = np.full(knots, float(np.median(z)))
    else:
        grid = np.linspace(lo, hi, knots)
        z_grid = np.interp(grid, levels, mids)
    return {
        "value": grid.astype(np.float32).tolist(),
        "z": z_grid.astype(np.float32).tolist(),
        "quantiles": np.quantile(z, np.linspace(0.0, 1.0, knots)).astype(np.float32).tolist(),
        "direction": direction,
        "value_range": [lo, hi],
        "z_range": [float(z_grid[0]), float(z_grid[-1])],
        "spearman": spearman,
        "count": int(len(z)),
    }


def _fit_maps(model, config, reference_tokens: Optional[np.ndarray], seed: int = 0):
    """Fit the maps of every regularised dim; returns (maps, sample tokens, how)."""
    import tensorflow as tf

    dims = regularized_dims(config)
    if reference_tokens is not None:
        tokens = measures.check_tokens(reference_tokens)
        if len(tokens) == 0:
            raise ValueError("reference_tokens is empty")
        if len(tokens) > MAX_FIT_MEASURES:
            pick = np.random.default_rng(seed).choice(len(tokens), MAX_FIT_MEASURES, replace=False)
            tokens = tokens[np.sort(pick)]
        z = np.concatenate(_batched(lambda b: model.encode(tf.constant(b))[0].numpy(), tokens))
        source = "reference_tokens"
    else:
        z_dim = int(config.model.z_dim)
        z = np.random.default_rng(seed).standard_normal((PRIOR_FIT_SAMPLES, z_dim)).astype(np.float32)
        tokens = np.concatenate(
            _batched(lambda b: np.asarray(model.decode(tf.constant(b), temperature=0.0)), z)
        ).astype(np.int32)
        source = "prior_samples"
    values = attrs.compute_all(tokens)
    maps = {}
    for name, dim in dims.items():
        maps[name] = dict(fit_monotone_map(z[:, dim], values[:, attrs.attribute_index(name)]), dim=dim)
    pick = np.random.default_rng(seed + 1).permutation(len(tokens))[:REFERENCE_SAMPLE]
    return maps, tokens[np.sort(pick)], {"source": source, "count": int(len(tokens))}


def build_metadata(config, maps: dict, fit_info: dict) -> dict:
    """The JSON document returned by the ``metadata`` signature."""
    dims = regularized_dims(config)
    return {
        "format_version": FORMAT_VERSION,
        "package": "music-attr-vae",
        "package_version": package_version(),
        "model_name": str(config.get("name", "")),
        "z_dim": int(config.model.z_dim),
        "vocabulary": measures.vocabulary(),
        "attribute_names": list(attrs.ATTRIBUTE_NAMES),
        "regularized": dims,
        "attribute_maps": maps,
        "map_fit": fit_info,
        "config": json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else config,
        "signatures": sorted(_SIGNATURE_NAMES),
        "limits": dict(LIMITS),
    }


# ---------------------------------------------------------------- the module

_SIGNATURE_NAMES = (
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


# Batch sizes the XLA decoder is compiled for: a batch is padded up to the
# smallest bucket that holds it, and larger batches run in chunks of the
# largest, so a process compiles at most len(DECODE_BUCKETS) programs instead of
# one per batch size (each compile takes seconds).
DECODE_BUCKETS = (8, 64, 256)


def _bucketed_decode(decode_fixed, z, temperature, seed, z_dim: int):
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
        fn_output_signature=tf.TensorSpec([None, measures.TICKS_PER_MEASURE], tf.int32),
    )
    return tf.reshape(tokens, [-1, measures.TICKS_PER_MEASURE])[:n]


def build_serving_module(
    model, config, maps: dict, sample_tokens: np.ndarray, metadata: dict, jit_compile: bool = False
):
    """A tf.Module exposing the serving functions of ``model`` (see module docstring).

    With ``jit_compile`` the free-running decoder (the 24-step loop that
    dominates every signature's time) is compiled with XLA as one cluster, for
    the batch sizes of ``DECODE_BUCKETS``; the input checks stay outside it,
    because XLA cannot run assertions.
    """
    import tensorflow as tf

    z_dim = int(config.model.z_dim)
    ticks = measures.TICKS_PER_MEASURE
    names = list(maps.keys())
    dims_of_names = [int(maps[n]["dim"]) for n in names]
    described = ", ".join(f"{n} (dim {d})" for n, d in zip(names, dims_of_names)) or "none"
    attr_msg = (
        f"unknown attribute: use a regularised attribute of this model [{described}] "
        f"or a latent dim number 0..{z_dim - 1} written as a string"
    )
    map_msg = f"set_attribute needs a regularised attribute of this model: [{described}]"
    token_msg = (
        f"tokens must lie in 0..{measures.VOCAB_SIZE - 1} "
        f"(0..{measures.NUM_PITCHES - 1} = MIDI {measures.MIN_PITCH}..{measures.MAX_PITCH} onsets, "
        f"{measures.REST} = REST, {measures.HOLD} = HOLD)"
    )

    names_t = tf.constant(names if names else [""], tf.string)
    dims_t = tf.constant(dims_of_names if names else [-1], tf.int32)
    map_values = tf.constant(
        np.array([maps[n]["value"] for n in names] or [np.zeros(MAP_KNOTS)], np.float32)
    )
    map_z = tf.constant(np.array([maps[n]["z"] for n in names] or [np.zeros(MAP_KNOTS)], np.float32))
    # the regularised dims' marginals, drawn by ``sample`` (see the module docstring)
    quantile_levels = tf.constant(np.linspace(0.0, 1.0, MAP_KNOTS), tf.float32)
    marginals = [(dim, tf.constant(maps[n]["quantiles"], tf.float32)) for n, dim in zip(names, dims_of_names)]
    attr_columns = tf.constant([attrs.attribute_index(n) for n in names] or [0], tf.int32)
    metadata_json = tf.constant(json.dumps(metadata))
    sample_tokens_t = tf.constant(np.asarray(sample_tokens, np.int32).reshape(-1, ticks))
    sample_attrs_t = tf.constant(attrs.compute_all(sample_tokens).reshape(-1, len(attrs.ATTRIBUTE_NAMES)))

    tokens_spec = tf.TensorSpec([None, ticks], tf.int32, name="tokens")
    z_spec = tf.TensorSpec([None, z_dim], tf.float32, name="z")
    temp_spec = tf.TensorSpec([], tf.float32, name="temperature")
    seed_spec = tf.TensorSpec([], tf.int32, name="seed")
    attr_spec = tf.TensorSpec([], tf.string, name="attribute")
    values_spec = tf.TensorSpec([None], tf.float32, name="values")

    # ------------------------------------------------ checks (graph asserts)
    def check_at_most(count, limit_name: str, what: str):
        """An assert that ``count`` (a scalar) is within ``LIMITS[limit_name]``."""
        limit = LIMITS[limit_name]
        return tf.debugging.assert_less_equal(
            tf.cast(count, tf.int64), tf.constant(limit, tf.int64),
            message=f"{what} must be <= {limit_name} = {limit} per call",
        )

    def check_batch(x, what):
        with tf.control_dependencies([check_at_most(tf.shape(x)[0], "MAX_BATCH", f"the number of {what}")]):
            return tf.identity(x)

    def check_tokens(tokens):
        tokens = check_batch(tokens, "measures")
        with tf.control_dependencies(
            [
                tf.debugging.assert_greater_equal(tokens, 0, message=token_msg),
                tf.debugging.assert_less(tokens, measures.VOCAB_SIZE, message=token_msg),
            ]
        ):
            return tf.identity(tokens)

    def check_finite(x, what):
        return tf.debugging.check_numerics(x, f"{what} must be finite (found NaN or Inf)")

    def check_temperature(temperature):
        temperature = check_finite(temperature, "temperature")
        with tf.control_dependencies(
            [tf.debugging.assert_greater_equal(temperature, 0.0, message="temperature must be >= 0")]
        ):
            return tf.identity(temperature)

    def resolve_dim(attribute):
        match = tf.equal(names_t, attribute) & tf.not_equal(attribute, "")
        is_name = tf.reduce_any(match)
        is_number = tf.strings.regex_full_match(attribute, r"[0-9]{1,6}")
        number = tf.strings.to_number(tf.where(is_number, attribute, "0"), tf.int32)
        ok = is_name | (is_number & (number < z_dim))
        assert_op = tf.debugging.Assert(ok, [attr_msg, "got:", attribute])
        with tf.control_dependencies([assert_op]):
            index = tf.argmax(tf.cast(match, tf.int32), output_type=tf.int32)
            return tf.where(is_name, tf.gather(dims_t, index), number)

    def resolve_map(attribute):
        match = tf.equal(names_t, attribute) & tf.not_equal(attribute, "")
        assert_op = tf.debugging.Assert(tf.reduce_any(match), [map_msg, "got:", attribute])
        with tf.control_dependencies([assert_op]):
            return tf.argmax(tf.cast(match, tf.int32), output_type=tf.int32)

    # ------------------------------------------------ model calls
    # One traced function each for the decoder and the encoder, called by every
    # signature: the SavedModel then holds a single copy of the 24-step decoder
    # graph, which keeps it small and quick to load.
    @tf.function(input_signature=[z_spec, temp_spec, seed_spec], autograph=False, jit_compile=jit_compile or None)
    def decode_core(z, temperature, seed):
        return tf.cast(model.decode(z, temperature=temperature, seed=seed), tf.int32)

    def model_decode(z, temperature, seed):
        if not jit_compile:
            return decode_core(z, temperature, seed)
        return _bucketed_decode(decode_core, z, temperature, seed, z_dim)

    @tf.function(input_signature=[tokens_spec], autograph=False)
    def model_encode(tokens):
        z_mean, z_log_var = model.encode(tokens)
        return tf.cast(z_mean, tf.float32), tf.cast(z_log_var, tf.float32)

    def set_dim(z, dim, values):
        """z [N,D], values [N] -> z with column ``dim`` replaced."""
        one_hot = tf.one_hot(dim, z_dim, dtype=z.dtype)
        return z * (1.0 - one_hot) + values[:, None] * one_hot

    def traverse_from_z(z, attribute, values, temperature, seed):
        dim = resolve_dim(attribute)
        values = check_finite(values, "values")
        n, k = tf.shape(z)[0], tf.shape(values)[0]
        with tf.control_dependencies([
            check_at_most(k, "MAX_VALUES", "the number of values (K)"),
            check_at_most(tf.cast(n, tf.int64) * tf.cast(k, tf.int64), "MAX_GRID", "measures x values (N*K)"),
        ]):
            grid = tf.repeat(z, k, axis=0)  # [N*K, D], measure-major
        grid = set_dim(grid, dim, tf.tile(values, [n]))
        tokens = model_decode(grid, check_temperature(temperature), seed)
        return {
            "tokens": tf.reshape(tokens, [n, k, ticks]),
            "z": tf.reshape(grid, [n, k, z_dim]),
        }

    module = tf.Module()
    module.model_variables = list(model.variables)

    @tf.function(input_signature=[])
    def metadata_fn():
        return {"json": metadata_json}

    @tf.function(input_signature=[tokens_spec])
    def encode(tokens):
        z_mean, z_log_var = model_encode(check_tokens(tokens))
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    @tf.function(input_signature=[z_spec, temp_spec, seed_spec])
    def decode(z, temperature, seed):
        z = check_finite(check_batch(z, "latent codes"), "z")
        return {"tokens": model_decode(z, check_temperature(temperature), seed)}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="n"), seed_spec, temp_spec])
    def sample(n, seed, temperature):
        with tf.control_dependencies([tf.debugging.assert_non_negative(n, message="n must be >= 0"),
                                      check_at_most(n, "MAX_SAMPLE", "n")]):
            z = tf.random.stateless_normal(tf.stack([n, z_dim]), seed=tf.stack([seed, 7919]))
            u = tf.random.stateless_uniform(tf.stack([n, max(1, len(marginals))]), seed=tf.stack([seed, 7920]))
        for i, (dim, quantiles) in enumerate(marginals):
            z = set_dim(z, dim, _interp(u[:, i], quantile_levels, quantiles))
        return {"tokens": model_decode(z, check_temperature(temperature), seed), "z": z}

    @tf.function(input_signature=[tokens_spec, attr_spec, values_spec, temp_spec, seed_spec])
    def traverse(tokens, attribute, values, temperature, seed):
        z, _ = model_encode(check_tokens(tokens))
        return traverse_from_z(z, attribute, values, temperature, seed)

    @tf.function(input_signature=[z_spec, attr_spec, values_spec, temp_spec, seed_spec])
    def traverse_z(z, attribute, values, temperature, seed):
        return traverse_from_z(check_finite(check_batch(z, "latent codes"), "z"), attribute, values, temperature, seed)

    @tf.function(
        input_signature=[tokens_spec, attr_spec, tf.TensorSpec(None, tf.float32, name="target"), temp_spec, seed_spec]
    )
    def set_attribute(tokens, attribute, target, temperature, seed):
        tokens = check_tokens(tokens)
        index = resolve_map(attribute)
        n = tf.shape(tokens)[0]
        target = tf.reshape(check_finite(target, "target"), [-1])
        size_ok = tf.logical_or(tf.equal(tf.size(target), 1), tf.equal(tf.size(target), n))
        with tf.control_dependencies(
            [tf.debugging.Assert(size_ok, ["target must be a scalar or have one value per measure"])]
        ):
            target = tf.broadcast_to(target, [n])
        xp, fp = tf.gather(map_values, index), tf.gather(map_z, index)
        predicted = tf.clip_by_value(target, xp[0], xp[-1])
        z, _ = model_encode(tokens)
        z = set_dim(z, tf.gather(dims_t, index), _interp(predicted, xp, fp))
        new_tokens = model_decode(z, check_temperature(temperature), seed)
        column = tf.gather(attr_columns, index)
        return {
            "tokens": new_tokens,
            "z": z,
            "predicted": predicted,
            "attribute_before": tf.gather(attrs.tf_compute_all(tokens), column, axis=1),
            "attribute_after": tf.gather(attrs.tf_compute_all(new_tokens), column, axis=1),
        }

    @tf.function(input_signature=[tokens_spec])
    def attributes_fn(tokens):
        return {"values": attrs.tf_compute_all(check_tokens(tokens))}

    @tf.function(input_signature=[tokens_spec])
    def teacher_forced_nll(tokens):
        tokens = check_tokens(tokens)
        z, _ = model_encode(tokens)
        logits = tf.cast(model.teacher_forced_logits(z, tokens), tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tokens, logits=logits)
        hit = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tokens), tf.float32)
        return {"nll": tf.reduce_sum(ce, -1), "accuracy": tf.reduce_mean(hit, -1)}

    @tf.function(input_signature=[])
    def reference_measures():
        return {"tokens": sample_tokens_t, "attributes": sample_attrs_t}

    module.metadata = metadata_fn
    module.encode = encode
    module.decode = decode
    module.sample = sample
    module.traverse = traverse
    module.traverse_z = traverse_z
    module.set_attribute = set_attribute
    module.attributes = attributes_fn
    module.teacher_forced_nll = teacher_forced_nll
    module.reference_measures = reference_measures
    return module


# ---------------------------------------------------------------- saving


def export_saved_model(
    model, config, export_dir: str, *, reference_tokens=None, seed: int = 0, jit_compile: bool = True
) -> str:
    """Write the serving SavedModel of ``model`` to ``export_dir``; returns the path.

    ``reference_tokens`` (N, 24), e.g. the validation or test measures, are the
    data the attribute maps are fitted on; without them the maps are fitted on
    measures decoded from ``PRIOR_FIT_SAMPLES`` prior samples.  The export is
    written to a temporary directory beside ``export_dir`` and renamed into
    place, so a reader never sees a half-written model; an existing export is
    replaced only once the new one is complete.  ``jit_compile`` (default)
    compiles the decoder loop with XLA for a few bucketed batch sizes (see
    :func:`build_serving_module`): about 1.3x the throughput on CPU, for a
    compile of a few seconds the first time a process uses each bucket.
    """
    import tensorflow as tf

    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise ExportError(f"could not create {parent} for the SavedModel {export_dir}: {err.strerror}") from err
    maps, sample_tokens, fit_info = _fit_maps(model, config, reference_tokens, seed=seed)
    metadata = build_metadata(config, maps, fit_info)
    module = build_serving_module(model, config, maps, sample_tokens, metadata, jit_compile=jit_compile)
    signatures = {name: getattr(module, name).get_concrete_function() for name in _SIGNATURE_NAMES}
    tmp = None
    try:
        tmp = fileio.make_temp_dir(export_dir)
        tf.saved_model.save(module, tmp, signatures=signatures)
        assets = os.path.join(tmp, "assets")
        os.makedirs(assets, exist_ok=True)
        fileio.write_json(os.path.join(assets, "metadata.json"), metadata)
        fileio.swap_dir_into_place(tmp, export_dir)
    except (OSError, tf.errors.OpError) as err:
        kept = "the previous export there is kept" if os.path.exists(export_dir) else "nothing was written there"
        reason = getattr(err, "message", None) or str(err)
        raise ExportError(f"could not write the SavedModel to {export_dir} ({reason.strip()}); {kept}") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


def read_metadata(export_dir: str) -> dict:
    """The metadata of an export, read from its assets (no TensorFlow needed)."""
    path = os.path.join(export_dir, "assets", "metadata.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{export_dir} has no assets/metadata.json: not a music-attr-vae export")
    with open(path, encoding="utf-8") as f:
        return json.load(f)
