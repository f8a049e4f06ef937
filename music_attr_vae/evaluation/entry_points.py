"""Evaluate a training workdir or an exported SavedModel, on a test split or on another corpus.

:func:`evaluate_workdir` restores the newest intact checkpoint
(``workdir.load_model``); :func:`evaluate_saved_model` loads an export.  Both
find the measures to score (:func:`evaluation_data`: a prepared test split, or
a ``--source`` corpus prepared untransposed), mark the ones seen in training,
wrap the model in an adapter (``evaluation/adapters.py``) and call
:func:`music_attr_vae.evaluation.evaluate.evaluate`.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Dict, Optional, Tuple

import numpy as np

from music_attr_vae import workdir as wd
from music_attr_vae.data import attributes as attrs
from music_attr_vae.data import loader, prepare, splits
from music_attr_vae.evaluation.adapters import KerasLatentModel, SavedModelLatentModel
from music_attr_vae.evaluation.evaluate import EvalOptions, ModelInfo, evaluate, seen_in


def _config_regularization(config) -> Dict[str, dict]:
    """Plain-dict regularization specs from a ConfigDict (or dict), keyed by attribute name."""
    reg = config.get("regularization") if hasattr(config, "get") else None
    out = {}
    for name, spec in dict(reg or {}).items():
        attrs.attribute_index(name)
        spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
        out[name] = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in spec.items()}
    return out


def _load_test(data_dir: str, split: str = "test") -> Tuple[np.ndarray, np.ndarray]:
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data dir {data_dir} does not exist")
    arrays = loader.load_arrays(data_dir, split)
    return np.asarray(arrays["tokens"], np.int32), np.asarray(arrays["attributes"], np.float32)


SOURCE_SPLIT = "train"  # a --source corpus is prepared whole, into this one split


def source_label(source: str, kind: str = "source") -> str:
    """A folder name for the evaluation of ``source``: ``kind``, its base name and a short hash of the whole text."""
    base = splits.source_name(source.split(",")[0], kind)[:40]
    return f"{kind}-{base}-{hashlib.sha256(source.encode('utf-8')).hexdigest()[:8]}"


def eval_label(source: Optional[str], data_dir: str, own_data_dir: Optional[str]) -> str:
    """The sub-folder of DIR/eval for one evaluation: "" for the model's own test split, else a labelled one.

    ``own_data_dir`` is the data the model was trained on (None when unknown,
    as for a SavedModel outside a workdir).  Another corpus never lands on the
    workdir's own evaluation.
    """
    if source:
        return source_label(source)
    if own_data_dir and os.path.abspath(data_dir) == os.path.abspath(own_data_dir):
        return ""
    return source_label(data_dir, "data")


def prepare_source(source: str, output_dir: str) -> str:
    """Prepare another corpus for evaluation: every tune in its own key (no transposition), in one split.

    Written to ``output_dir``/data; returns that data dir.  Tunes that do not
    fit the model's pitch range untransposed are skipped and counted there.
    """
    os.makedirs(output_dir, exist_ok=True)
    data_dir = os.path.join(output_dir, "data")
    prepare.prepare(source, data_dir, max_shift=0, split_fractions=(1.0, 0.0, 0.0), progress=False)
    return data_dir


def evaluation_data(source: Optional[str], data_dir: str, output_dir: str, trained_on: Optional[str] = None):
    """(data dir, split, tokens, attributes, seen) for the test split of ``data_dir`` or for ``source``.

    ``seen`` marks the measures that occur in the training split of
    ``trained_on`` (the data the model was trained on; default ``data_dir``),
    so a model trained on several corpora can be scored on one corpus's test
    split with "unseen" still meaning "not in anything it trained on".
    """
    trained_on = trained_on or data_dir
    if source:
        eval_dir = prepare_source(source, output_dir)
        tokens, attribute_values = _load_test(eval_dir, SOURCE_SPLIT)
        return eval_dir, "all", tokens, attribute_values, _seen_in_training(trained_on, tokens)
    tokens, attribute_values = _load_test(data_dir)
    return data_dir, "test", tokens, attribute_values, _seen_in_training(trained_on, tokens)


def _seen_in_training(data_dir: str, tokens: np.ndarray) -> np.ndarray:
    """Which test measures also occur, token for token, in the training split of ``data_dir``."""
    return seen_in(tokens, loader.load_arrays(data_dir, "train")["tokens"])


def evaluate_workdir(workdir: str, *, data_dir: Optional[str] = None, output_dir: Optional[str] = None,
                     name: Optional[str] = None, options: Optional[EvalOptions] = None,
                     source: Optional[str] = None) -> dict:
    """Evaluate the newest intact checkpoint of a training workdir; writes DIR/eval/ and DIR/tensorboard/eval.

    With ``source`` (a file, folder or glob of tunes) the model is evaluated on
    every measure of that corpus instead of its test split, in
    DIR/eval/source-NAME-HASH/ by default; "seen" then means "occurs in the
    model's training split".  The test split of another prepared ``data_dir``
    goes to DIR/eval/data-NAME-HASH/ by default, so neither replaces the
    workdir's own evaluation in DIR/eval/.
    """
    options = options or EvalOptions()
    workdir = os.path.abspath(workdir)
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir={workdir} does not exist")
    start = time.perf_counter()
    trained_on = os.path.abspath(wd.data_dir_of(workdir))
    data_dir = os.path.abspath(data_dir) if data_dir else trained_on
    model, config = wd.load_model(workdir)
    info = ModelInfo(
        name=name or os.path.basename(workdir.rstrip(os.sep)), config_name=str(config.get("name", "?")),
        source="workdir", path=workdir, z_dim=int(config.model.z_dim), regularization=_config_regularization(config),
    )
    latent_model = KerasLatentModel(model, info.z_dim, options.batch_size)
    label = eval_label(source, data_dir, trained_on)
    output_dir = output_dir or wd.path(workdir, wd.EVAL_DIR, label)
    eval_data, split, tokens, attribute_values, seen = evaluation_data(source, data_dir, output_dir, trained_on)
    timing = {"load": round(time.perf_counter() - start, 3)}
    return evaluate(latent_model, info, tokens, attribute_values, data_dir=eval_data, output_dir=output_dir,
                    tensorboard_dir=wd.tensorboard_dir(workdir, os.path.join(wd.EVAL_DIR, label)), options=options,
                    timing=timing, seen=seen, split=split, source=source)


def evaluate_saved_model(saved_model: str, data_dir: str, *, output_dir: Optional[str] = None,
                         name: Optional[str] = None, options: Optional[EvalOptions] = None,
                         source: Optional[str] = None) -> dict:
    """Evaluate an exported SavedModel on the test split of ``data_dir`` (or on ``source``, as for a workdir).

    Output goes to ``output_dir`` (TensorBoard images to ``output_dir``/tensorboard)
    or by default beside the SavedModel: DIR/eval and DIR/tensorboard/eval for
    DIR/saved_model of a workdir DIR trained on ``data_dir``, as for a workdir;
    any other corpus goes to DIR/eval/data-NAME-HASH (or source-NAME-HASH).
    """
    options = options or EvalOptions()
    saved_model = os.path.abspath(saved_model)
    if not os.path.exists(os.path.join(saved_model, "saved_model.pb")):
        raise FileNotFoundError(f"--saved_model={saved_model} is not a SavedModel dir (no saved_model.pb)")
    start = time.perf_counter()
    latent_model = SavedModelLatentModel(saved_model, options.batch_size)
    meta = latent_model.served.metadata
    config = meta.get("config") or {}
    regularization = _config_regularization(config)
    if not regularization:  # an export whose config was not recorded: dims only
        regularization = {n: {"dim": int(d)} for n, d in (meta.get("regularized") or {}).items()}
    parent = os.path.dirname(saved_model.rstrip(os.sep))
    info = ModelInfo(
        name=name or os.path.basename(parent) or os.path.basename(saved_model),
        config_name=str(config.get("name") or meta.get("model_name") or "?"),
        source="saved_model", path=saved_model, z_dim=latent_model.z_dim, regularization=regularization,
    )
    data_dir = os.path.abspath(data_dir)
    label = eval_label(source, data_dir, wd.data_dir_of(parent) if wd.is_workdir(parent) else None)
    if output_dir:  # a folder of its own: keep the TensorBoard images inside it
        tensorboard_dir = os.path.join(output_dir, "tensorboard")
    else:  # DIR/saved_model -> DIR/eval and DIR/tensorboard/eval, as for a workdir
        output_dir = wd.path(parent, wd.EVAL_DIR, label)
        tensorboard_dir = wd.tensorboard_dir(parent, os.path.join(wd.EVAL_DIR, label))
    eval_data, split, tokens, attribute_values, seen = evaluation_data(source, data_dir, output_dir)
    timing = {"load": round(time.perf_counter() - start, 3)}
    return evaluate(latent_model, info, tokens, attribute_values, data_dir=eval_data, output_dir=output_dir,
                    tensorboard_dir=tensorboard_dir, options=options, timing=timing, seen=seen, split=split,
                    source=source)
