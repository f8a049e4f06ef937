"""Load and validate experiment configs (``configs/<name>.py``, ml_collections).

A config file defines ``get_config() -> ConfigDict``; the field reference is
in ``configs/common.py``.  ``load_config`` accepts a path or a bare name
resolved in the repository's ``configs/`` folder (or ``$MUSIC_ATTR_VAE_CONFIGS``),
applies dotted overrides, and validates the result so that a bad value fails
here with its field path rather than deep inside training.

This module imports no TensorFlow at load time: config files import it (for
``sibling_module``) while absl parses flags.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import sys
from typing import Any, Dict, Mapping, Optional

import ml_collections

from music_attr_vae.data import attributes

CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
LR_SCHEDULES = ("constant", "cosine")
MATMUL_DTYPES = ("auto", "float32", "bfloat16")


def configs_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MUSIC_ATTR_VAE_CONFIGS", str(CONFIGS_DIR)))


def sibling_module(config_file: str, name: str):
    """Import ``<name>.py`` from the folder of ``config_file`` (how configs share ``common.py``).

    Config files are loaded by path (ml_collections' config_flags), not as a
    package, so they cannot use relative imports.
    """
    path = pathlib.Path(config_file).resolve().parent / f"{name}.py"
    module_name = f"_music_attr_vae_config_{name}_{abs(hash(str(path)))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None or not path.exists():
        raise FileNotFoundError(f"config helper {path} not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def resolve_config_path(path_or_name: str) -> pathlib.Path:
    """A path to a config file, or a bare name such as 'rhy_pr' looked up in configs/."""
    candidate = pathlib.Path(path_or_name)
    if candidate.suffix == ".py" or os.sep in path_or_name:
        if not candidate.exists():
            raise FileNotFoundError(f"config file {path_or_name!r} does not exist")
        return candidate
    named = configs_dir() / f"{path_or_name}.py"
    if not named.exists():
        known = sorted(p.stem for p in configs_dir().glob("*.py") if p.stem != "common")
        raise FileNotFoundError(
            f"no config named {path_or_name!r} in {configs_dir()}; known configs: {', '.join(known)}"
        )
    return named


def load_config(path_or_name: str, overrides: Optional[Mapping[str, Any]] = None) -> ml_collections.ConfigDict:
    """Load ``configs/<name>.py`` (or a path), apply ``overrides`` and validate.

    ``overrides`` maps dotted field paths to values, e.g.
    ``{"train.epochs": 3, "regularization.pitch_range.gamma": 2.0}``; a nested
    dict is flattened the same way.  Raises ValueError for an unknown field,
    a value of the wrong type or an invalid value.
    """
    path = resolve_config_path(path_or_name)
    spec = importlib.util.spec_from_file_location(f"_music_attr_vae_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
    config = module.get_config()
    apply_overrides(config, overrides or {})
    validate_config(config)
    return config


def flatten(overrides: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (ConfigDicts are leaves)."""
    flat: Dict[str, Any] = {}
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and not isinstance(value, ml_collections.ConfigDict):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
    """Set dotted fields in place; unknown fields and type mismatches raise ValueError."""
    for path, value in flatten(overrides).items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise ValueError(f"unknown config field {path!r} (no {part!r})")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"unknown config field {path!r}")
        try:
            node[leaf] = value
        except TypeError as exc:
            raise ValueError(f"config field {path!r}: {exc}") from None


# ---------------------------------------------------------------- validation

_positive_int = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
_non_negative_int = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0")
_non_negative = (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "a number >= 0")
_positive = (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "a number > 0")
_fraction = (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)")
_unit = (lambda v: isinstance(v, (int, float)) and 0 <= v <= 1, "a number in [0, 1]")
_bool = (lambda v: isinstance(v, bool), "true or false")

_RULES: Dict[str, tuple] = {
    "model.z_dim": _positive_int,
    "model.embed_dim": _positive_int,
    "model.enc_hidden": _positive_int,
    "model.enc_layers": _positive_int,
    "model.dec_hidden": _positive_int,
    "model.dec_layers": _positive_int,
    "model.dropout": _fraction,
    "model.mask_hold_at_start": _bool,
    "model.rnn_chains": _non_negative_int,
    "model.unroll": _bool,
    "model.matmul_dtype": (lambda v: v in MATMUL_DTYPES, f"one of {MATMUL_DTYPES}"),
    "model.inference_matmul_dtype": (lambda v: v in MATMUL_DTYPES, f"one of {MATMUL_DTYPES}"),
    "train.batch_size": _positive_int,
    "train.epochs": _positive_int,
    "train.steps_per_epoch": _non_negative_int,
    "train.learning_rate": _positive,
    "train.lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
    "train.lr_final_fraction": _unit,
    "train.lr_warmup_steps": _non_negative_int,
    "train.weight_decay": _non_negative,
    "train.token_dropout": _fraction,
    "train.clipnorm": _non_negative,
    "train.beta": _non_negative,
    "train.beta_anneal_steps": _non_negative_int,
    "train.gamma_ramp_steps": _non_negative_int,
    "train.gamma_ramp_start_steps": _non_negative_int,
    "train.consistency_batch": _positive_int,
    "train.seed": _non_negative_int,
    "train.checkpoint_every_steps": _non_negative_int,
    "train.keep_checkpoints": _positive_int,
    "train.log_every_steps": _positive_int,
    "train.jit_compile": (lambda v: v is True or v is False or v == "auto", "'auto', true or false"),
    "train.eval_free_running": _bool,
    "train.max_minutes": _non_negative,
    "train.inject_nan_at_step": _non_negative_int,
    "data.source": (lambda v: isinstance(v, str), "a string"),
    "data.max_shift": (lambda v: isinstance(v, int) and 0 <= v <= 24, "an integer in [0, 24]"),
    "data.seed": _non_negative_int,
    "data.validation_size": _non_negative_int,
}


def _get(config, path: str):
    node = config
    for part in path.split("."):
        if part not in node:
            raise ValueError(f"config is missing the field {path!r}")
        node = node[part]
    return node


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every field's range and the regularization mapping; ValueError names the field."""
    name = config.get("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError("config field 'name' must be a non-empty string")
    for path, (ok, wanted) in _RULES.items():
        value = _get(config, path)
        if not ok(value):
            raise ValueError(f"config field {path!r} = {value!r} must be {wanted}")
    from music_attr_vae.model.regularization import normalize_mapping

    reg = config.get("regularization", None) or {}
    normalize_mapping({k: dict(v) for k, v in reg.items()}, config.model.z_dim)
    return config


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """A plain, JSON-friendly dict of a config."""
    return config.to_dict()


def from_dict(data: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Inverse of ``to_dict`` (for the config.json written into every workdir).

    A field the dict lacks (a workdir written before the field existed) takes
    its default from ``configs/common.py``, the one home of every default, so
    no reader of a config needs a fallback of its own.  Regularization entries
    are taken whole (their field defaults live in ``model/regularization.py``).
    """
    try:
        config = load_config("common")
    except FileNotFoundError:  # no configs/ folder beside the package: the stored fields are all there is
        config = ml_collections.ConfigDict()
    for section, values in data.items():
        if section != "regularization" and isinstance(values, Mapping) and isinstance(
            config.get(section), ml_collections.ConfigDict
        ):
            for key, value in values.items():
                config[section][key] = value
        else:
            config[section] = ml_collections.ConfigDict(dict(values)) if isinstance(values, Mapping) else values
    return config


def regularized_dims(config) -> Dict[str, int]:
    """{attribute name: latent dim} of the regularised attributes, in ATTRIBUTE_NAMES order.

    ``config`` is a config (ConfigDict or dict) or anything with a
    ``regularization`` entry of {attribute: {dim, ...}}.  The one lookup of the
    regularised dims: the export's metadata, the evaluation report and the
    training's latent image all use it.
    """
    reg = config.get("regularization", None) or {}
    out = {}
    for name in attributes.ATTRIBUTE_NAMES:
        if name in reg:
            out[name] = int(reg[name]["dim"])
    unknown = set(reg.keys()) - set(attributes.ATTRIBUTE_NAMES)
    if unknown:
        raise ValueError(f"config.regularization names unknown attributes {sorted(unknown)}")
    return out
