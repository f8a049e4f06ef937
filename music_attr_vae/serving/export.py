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

The attribute maps (``serving/maps.py``): for each regularised attribute, the attribute of the
``reference_tokens`` (or, without them, of measures decoded from prior samples)
is regressed isotonically on ``z_mean[:, dim]``; the fit is stored as
``MAP_KNOTS`` strictly increasing attribute values and the dim values that
produce them, so setting an attribute is a table lookup and a linear
interpolation.

Limits (``serving/limits.py``): one request may ask for at most ``MAX_BATCH`` measures per call
(``N``), ``MAX_SAMPLE`` samples, ``MAX_VALUES`` traversal values (``K``) and
``MAX_GRID`` decoded measures per traversal (``N * K``); a larger request
fails at once, before anything is allocated, with an ``InvalidArgumentError``
naming the limit.  The values are in ``metadata()["limits"]``.
``bench/bench_limits.py`` measures the largest allowed ``sample`` and the
refused ones (``sample(n=10**7)`` used to take 5.7 GB).

Speed: every signature (``serving/signatures.py``) calls one shared decoder function (one copy of the
24-step graph in the SavedModel, so it loads in about 2 s; each module attribute is the very concrete
function of its signature, so no function is stored twice), compiled with XLA
for the batch sizes of ``DECODE_BUCKETS`` unless exported with
``jit_compile=False``.  The module's variable ``plain_max_rows`` (0 as exported)
is the most measures a request runs as a plain graph instead; a one-shot command
sets it to 8 (``client.answer_once``) to spare XLA's first-call cost.  See
``bench/bench_serving.py``.
"""

from __future__ import annotations

import json
import os
import shutil

from music_attr_vae import configs_loader, fileio
from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC, MeasureCodec
from music_attr_vae.serving.limits import LIMITS
from music_attr_vae.serving.maps import fit_maps
from music_attr_vae.serving.signatures import SIGNATURE_NAMES, build_serving_module

FORMAT_VERSION = 1


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


def build_metadata(config, maps: dict, fit_info: dict, codec: MeasureCodec = CODEC) -> dict:
    """The JSON document returned by the ``metadata`` signature; ``codec`` is the model's."""
    dims = configs_loader.regularized_dims(config)
    return {
        "format_version": FORMAT_VERSION,
        "package": "music-attr-vae",
        "package_version": package_version(),
        "model_name": str(config.get("name", "")),
        "z_dim": int(config.model.z_dim),
        "vocabulary": codec.to_json(),
        "attribute_names": list(attrs.ATTRIBUTE_NAMES),
        "regularized": dims,
        "attribute_maps": maps,
        "map_fit": fit_info,
        "config": json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else config,
        "signatures": sorted(SIGNATURE_NAMES),
        "limits": dict(LIMITS),
    }


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
    maps, sample_tokens, fit_info = fit_maps(model, config, reference_tokens, seed=seed)
    metadata = build_metadata(config, maps, fit_info, model.codec)
    module = build_serving_module(model, config, maps, sample_tokens, metadata, jit_compile=jit_compile)
    signatures = {name: getattr(module, name).get_concrete_function() for name in SIGNATURE_NAMES}
    for name, function in signatures.items():
        # the attribute is the signature's own concrete function: TensorFlow stores a function that is
        # both a tf.function attribute and a signature twice, and one that is the same object once
        setattr(module, name, function)
    tmp = None
    try:
        tmp = fileio.make_temp_dir(export_dir)
        # serving never differentiates: without the GRUs' custom gradients the export is smaller and faster
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
        tf.saved_model.save(module, tmp, signatures=signatures, options=options)
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
