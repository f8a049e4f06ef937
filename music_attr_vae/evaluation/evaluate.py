"""Evaluate one trained model on the test split: metrics.json, figures, TensorBoard.

Entry points (``evaluation/entry_points.py``): ``evaluate_workdir`` (a
training workdir, restored with ``workdir.load_model``) and
``evaluate_saved_model`` (an exported SavedModel plus a prepared data dir).
Both wrap the model in a ``LatentModel`` (``evaluation/adapters.py``) --
batched NumPy ``encode`` / ``decode`` /
teacher-forced statistics -- and call :func:`evaluate`, which only needs that
interface, the test arrays and a :class:`ModelInfo`.  All metrics use the
posterior means ``z_mean`` of the test measures (deterministic).

``DIR/eval/metrics.json`` (schema_version 1)::

    model:        {name, config, source ('workdir'|'saved_model'), path, z_dim,
                   regularization: {attribute: {dim, gamma, delta, loss, target, ...}}}
    data:         {data_dir, split: 'test', n_test}
    reconstruction: {token_accuracy_free_running (headline), token_accuracy_teacher_forced,
                   measure_accuracy_free_running, nll_per_token, kl_per_measure,
                   teacher_forced_note (why the teacher-forced figures are null, else null)}
    attributes:   {attribute: {
                     regularised (bool), regularised_dim (int|null),
                     interpretability: {dim, r2, mutual_information: [D floats]},
                     probe_dim, probe_dim_source ('regularised'|'max_mi'),
                     spearman, spearman_signed, isotonic_r2, linear_r2
                                                        (attribute vs probe dim, encoded test set)
                     mig, sap                           (over all dims)
                     mig_attribute_code                 (MIG of the four attributes as the code)
                     mig_ksg, mig_ksg_attribute_code    (the same two with AR-VAE's continuous estimates)
                     controllability: {dim, direction (+1|-1), steps: [S], n_traversals,
                                       monotone_fraction, strictly_increasing_fraction,
                                       spearman, mean_change}}}
    disentanglement: {modularity, mig_bins, mi_subsample, mi_estimator}
    summary:      {reconstruction_accuracy, interpretability_mean, spearman_mean, isotonic_r2_mean,
                   mig_mean, mig_attribute_code_mean, mig_ksg_mean, mig_ksg_attribute_code_mean, sap_mean, modularity, regularised_attributes: [...]}
    figures:      {latent_space, attribute_surfaces, traversals: file names in the eval dir}
    options:      the EvalOptions used;  timing_s: {stage: seconds, total};  created: ISO time

The *probe dim* of an attribute is its regularised dim, or for an attribute the
model does not regularise, the dim interpretability chose (highest mutual
information); Spearman, isotonic R^2 and controllability are measured on it,
so unregularised models (Base) get comparable numbers.  ``spearman`` is signed
for regularised dims (the loss makes the relation increasing) and taken in
absolute value for max-MI dims, whose sign is arbitrary.  The ``*_mean``
summaries average over all four attributes.

Controllability traverses the probe dim from mean - 3 std to mean + 3 std of
that dim over the test latents (the empirical spread, since a regularised dim
is rarely N(0, 1)-shaped), for ``traversal_latents`` test latents with the
other dims kept; ``direction`` orients it so the attribute should rise.  Cost
is bounded by subsampling: the k-NN mutual information runs on at most
``mi_max_points`` latents, Figure 1 shows at most ``scatter_max_points``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from music_attr_vae import configs_loader, fileio
from music_attr_vae.data import attributes as attrs
from music_attr_vae.evaluation import figures, metrics
from music_attr_vae.evaluation.adapters import LatentModel

SCHEMA_VERSION = 1
METRICS_FILE = "metrics.json"
FIGURE_DATA_FILE = "figure_data.npz"
FIGURE_FILES = {
    "latent_space": "figure1_latent_space.png",
    "attribute_surfaces": "figure2_attribute_surfaces.png",
    "traversals": "figure3_traversals.png",
}
DEFAULT_PLANE_DIMS = (0, 2)  # the paper's plane: dims of rhythmic complexity and pitch range

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalOptions:
    """Knobs of an evaluation; the defaults keep one model under 2 minutes on 2 CPU cores."""

    batch_size: int = 512
    mi_max_points: int = metrics.DEFAULT_MI_MAX_POINTS  # subsample for the k-NN MI estimator
    num_bins: int = metrics.DEFAULT_NUM_BINS  # MIG / Modularity histogram bins
    traversal_latents: int = 200  # test latents traversed per attribute (controllability)
    traversal_steps: int = 13
    traversal_sigmas: float = 3.0  # traverse mean +- this many std of the dim over the test set
    surface_resolution: int = 25  # Figure 2 grid is resolution x resolution decodes
    strip_steps: int = 8  # Figure 3 panels per traversed dim
    scatter_max_points: int = 5000  # Figure 1 points
    seed: int = 0
    figures: bool = True

    def __post_init__(self):
        for name in ("batch_size", "traversal_latents", "surface_resolution", "scatter_max_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalOptions.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("traversal_steps", "strip_steps", "num_bins"):
            if getattr(self, name) < 2:
                raise ValueError(f"EvalOptions.{name} must be >= 2; got {getattr(self, name)}")
        if self.traversal_sigmas <= 0:
            raise ValueError(f"EvalOptions.traversal_sigmas must be > 0; got {self.traversal_sigmas}")


@dataclasses.dataclass
class ModelInfo:
    """What the report says about the model being evaluated."""

    name: str
    config_name: str
    source: str  # 'workdir' or 'saved_model'
    path: str
    z_dim: int
    regularization: Dict[str, dict]  # attribute -> {dim, gamma, ...}

    def regularised_dims(self) -> Dict[str, int]:
        return configs_loader.regularized_dims({"regularization": self.regularization})


# ---------------------------------------------------------------- metric groups


def reconstruction_metrics(model: LatentModel, tokens: np.ndarray, z_mean: np.ndarray, z_log_var: np.ndarray,
                           decoded: Optional[np.ndarray] = None) -> dict:
    """Token accuracy free-running (greedy decode of z_mean: the headline) and teacher-forced,
    NLL per token (teacher-forced, at z_mean) and the KL term per measure.

    ``decoded`` (the free-running decode of ``z_mean``) is computed when not given.
    """
    if decoded is None:
        decoded = model.decode(z_mean)
    out = {
        "token_accuracy_free_running": float(np.mean(decoded == tokens)),
        "measure_accuracy_free_running": float(np.mean(np.all(decoded == tokens, axis=1))),
        "token_accuracy_teacher_forced": None,
        "nll_per_token": None,
        "kl_per_measure": float(np.mean(metrics.kl_to_standard_normal(z_mean, z_log_var))),
        "teacher_forced_note": model.teacher_forced_unavailable,
    }
    if model.teacher_forced_unavailable is None:
        accuracy, nll = model.teacher_forced_stats(z_mean, tokens)
        out["token_accuracy_teacher_forced"] = accuracy
        out["nll_per_token"] = nll
    return out


def latent_metrics(z: np.ndarray, attribute_values: np.ndarray, regularised: Dict[str, int],
                   options: EvalOptions) -> Tuple[Dict[str, dict], dict]:
    """Per-attribute interpretability / monotonicity / MIG / SAP, and Modularity over all attributes."""
    binned_mi = metrics.discrete_mutual_information(z, attribute_values, options.num_bins)  # shared by MIG, Modularity
    mig = metrics.mig(z, attribute_values, options.num_bins, mutual_information=binned_mi)
    sap = metrics.sap(z, attribute_values)
    attribute_code = metrics.attribute_code_mig(attribute_values, options.num_bins)
    subsample = dict(max_points=options.mi_max_points, seed=options.seed)
    per_attribute = {}
    for k, name in enumerate(attrs.ATTRIBUTE_NAMES):
        a = attribute_values[:, k]
        interp = metrics.interpretability(z, a, **subsample)
        self_information = metrics.continuous_self_information(a, **subsample)
        code_mi = metrics.continuous_mutual_information(attribute_values, a, **subsample)
        is_reg = name in regularised
        probe = regularised[name] if is_reg else interp.dim
        rho = metrics.spearman(z[:, probe], a)
        per_attribute[name] = {
            "regularised": is_reg,
            "regularised_dim": regularised.get(name),
            "interpretability": interp.to_dict(),
            "probe_dim": int(probe),
            "probe_dim_source": "regularised" if is_reg else "max_mi",
            "spearman": rho if is_reg else abs(rho),
            "spearman_signed": rho,
            "isotonic_r2": metrics.isotonic_r2(z[:, probe], a),
            "linear_r2": metrics.linear_r2(z[:, probe], a),
            "mig": float(mig[k]),
            "mig_attribute_code": float(attribute_code[k]),  # the MIG of the attributes themselves, one dim each
            "mig_ksg": metrics.mig_continuous(interp.mutual_information, self_information),
            "mig_ksg_attribute_code": metrics.mig_continuous(code_mi, self_information),
            "sap": float(sap[k]),
        }
    disentanglement = {
        "modularity": metrics.modularity(z, attribute_values, options.num_bins, mutual_information=binned_mi),
        "mig_bins": options.num_bins,
        "mi_subsample": int(min(len(z), options.mi_max_points)),
        "mi_estimator": "sklearn mutual_info_regression (KSG, k=3), random_state=seed",
    }
    return per_attribute, disentanglement


def _dim_range(z: np.ndarray, dim: int, sigmas: float, num: int) -> np.ndarray:
    """``num`` values from mean - sigmas*std to mean + sigmas*std of dim ``dim`` over the test latents."""
    mean, std = float(z[:, dim].mean()), float(z[:, dim].std())
    std = std if std > 0 else 1.0
    return np.linspace(mean - sigmas * std, mean + sigmas * std, num).astype(np.float32)


def traverse(model: LatentModel, base: np.ndarray, dim: int, steps: np.ndarray) -> np.ndarray:
    """Decode every latent of ``base`` (T, D) with dim ``dim`` set to each step: tokens (T, S, 24)."""
    z = np.repeat(base[:, None, :], len(steps), axis=1)
    z[:, :, dim] = steps[None, :]
    return model.decode(z.reshape(-1, base.shape[1])).reshape(len(base), len(steps), -1)


def controllability(model: LatentModel, z: np.ndarray, name: str, dim: int, direction: int,
                    options: EvalOptions) -> dict:
    """Traverse ``dim`` over a subsample of test latents; measure the attribute of the decoded measures.

    ``direction`` (+1/-1) orients the traversal so the attribute should rise:
    +1 for a regularised dim, the sign of the encoded-data correlation for a max-MI dim.
    """
    idx = metrics.subsample_indices(len(z), options.traversal_latents, options.seed)
    steps = _dim_range(z, dim, options.traversal_sigmas, options.traversal_steps)
    tokens = traverse(model, z[idx], dim, steps)
    values = attrs.compute(tokens.reshape(-1, tokens.shape[-1]), name).reshape(len(idx), len(steps))
    oriented = values if direction > 0 else values[:, ::-1]
    non_decreasing, increasing = metrics.monotone_step_fractions(oriented)
    return {
        "dim": int(dim),
        "direction": int(direction),
        "steps": [float(s) for s in steps],
        "n_traversals": int(len(idx)),
        "monotone_fraction": non_decreasing,
        "strictly_increasing_fraction": increasing,
        "spearman": metrics.traversal_spearman(direction * steps, values),
        "mean_change": float(np.mean(oriented[:, -1] - oriented[:, 0])),
    }


def plane_dims(regularised: Dict[str, int], z_dim: int) -> Tuple[int, int]:
    """The two dims of Figures 1-2: regularised dims first (attribute order), then 0 and 2.

    Sorted, so models regularising rhythmic complexity on 0 and pitch range on
    2 -- and Base -- all show the paper's (z[0], z[2]) plane.
    """
    dims = [regularised[n] for n in attrs.ATTRIBUTE_NAMES if n in regularised]
    for d in list(DEFAULT_PLANE_DIMS) + list(range(z_dim)):
        if d < z_dim and d not in dims:
            dims.append(d)
    if len(dims) < 2:
        raise ValueError(f"the figures need at least 2 latent dims; the model has {z_dim}")
    return tuple(sorted(dims[:2]))


# ---------------------------------------------------------------- figures


def make_figures(model: LatentModel, info: ModelInfo, z: np.ndarray, attribute_values: np.ndarray,
                 per_attribute: Dict[str, dict], output_dir: str, tensorboard_dir: Optional[str],
                 options: EvalOptions) -> Tuple[dict, dict]:
    """Figures 1-3 as PNG (+ TensorBoard), and the arrays behind Figures 1-2 for ``compare``."""
    dims = plane_dims(info.regularised_dims(), info.z_dim)
    label = info.name if info.name == info.config_name else f"{info.name} ({info.config_name})"
    idx = metrics.subsample_indices(len(z), options.scatter_max_points, options.seed)
    plane = z[idx][:, dims]
    fig1 = figures.latent_scatter_figure(
        plane, attribute_values[idx], dims, f"{label}: test latents on z[{dims[0]}], z[{dims[1]}] coloured by attribute"
    )
    x_values = _dim_range(z, dims[0], options.traversal_sigmas, options.surface_resolution)
    y_values = _dim_range(z, dims[1], options.traversal_sigmas, options.surface_resolution)
    center = z.mean(axis=0)
    surfaces = figures.attribute_surfaces(model.decode, center, dims, x_values, y_values)
    fig2 = figures.attribute_surface_figure(
        x_values, y_values, surfaces, dims,
        f"{label}: attributes of measures decoded on a z[{dims[0]}] x z[{dims[1]}] grid (other dims at the test mean)",
    )
    fig3 = figures.traversal_figure(_strip_rows(model, z, info, per_attribute, options),
                                    f"{label}: decoded measures along each dim, low to high (others fixed)")
    files = {}
    for key, fig in (("latent_space", fig1), ("attribute_surfaces", fig2), ("traversals", fig3)):
        figures.save_figure(fig, os.path.join(output_dir, FIGURE_FILES[key]), tensorboard_dir=tensorboard_dir,
                            tag=f"eval/{FIGURE_FILES[key][:-4]}")
        files[key] = FIGURE_FILES[key]
    data = {
        "plane_dims": np.array(dims), "plane": plane.astype(np.float32), "plane_attributes": attribute_values[idx],
        "surface_x": x_values, "surface_y": y_values, "surfaces": surfaces.astype(np.float32),
    }
    return files, data


def _strip_rows(model: LatentModel, z: np.ndarray, info: ModelInfo, per_attribute: Dict[str, dict],
                options: EvalOptions) -> List[dict]:
    """Figure 3 rows: one per regularised attribute (Base: rhythmic complexity and pitch range on
    their max-MI dims), all starting from the test latent nearest the mean latent."""
    names = [n for n in attrs.ATTRIBUTE_NAMES if per_attribute[n]["regularised"]] or list(attrs.ATTRIBUTE_NAMES[:2])
    start = z[np.argmin(np.sum((z - z.mean(axis=0)) ** 2, axis=1))][None]
    rows = []
    for name in names:
        dim = per_attribute[name]["probe_dim"]
        steps = _dim_range(z, dim, options.traversal_sigmas, options.strip_steps)
        if per_attribute[name]["spearman_signed"] < 0 and not per_attribute[name]["regularised"]:
            steps = steps[::-1]  # show the attribute rising left to right
        tokens = traverse(model, start, dim, steps)[0]
        rows.append({"dim": dim, "attribute": name, "steps": steps, "tokens": tokens,
                     "values": attrs.compute(tokens, name)})
    return rows


# ---------------------------------------------------------------- driver


def seen_in(tokens: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Boolean (N,): whether each measure of ``tokens`` occurs, token for token, among ``reference``'s rows."""
    def rows(array):
        array = np.ascontiguousarray(np.asarray(array, np.int8).reshape(len(array), -1))
        return array.view(np.dtype((np.void, array.shape[1]))).ravel()

    if len(tokens) == 0 or len(reference) == 0:
        return np.zeros(len(tokens), bool)
    return np.isin(rows(tokens), rows(reference))


def attribute_metrics(model: LatentModel, z_mean: np.ndarray, attribute_values: np.ndarray,
                      regularised: Dict[str, int], options: EvalOptions) -> Tuple[Dict[str, dict], dict]:
    """:func:`latent_metrics` plus each attribute's :func:`controllability` along its probe dim."""
    per_attribute, disentanglement = latent_metrics(z_mean, attribute_values, regularised, options)
    for name in attrs.ATTRIBUTE_NAMES:
        entry = per_attribute[name]
        direction = 1 if entry["regularised"] or entry["spearman_signed"] >= 0 else -1
        entry["controllability"] = controllability(model, z_mean, name, entry["probe_dim"], direction, options)
    return per_attribute, disentanglement


def subset_metrics(model: LatentModel, info: ModelInfo, tokens: np.ndarray, attribute_values: np.ndarray,
                   z_mean: np.ndarray, z_log_var: np.ndarray, decoded: np.ndarray, masks: Dict[str, np.ndarray],
                   options: EvalOptions) -> Dict[str, dict]:
    """Every reconstruction and attribute metric again on each masked subset of the test measures.

    A subset with fewer than 2 measures is reported with its size and no metrics.
    """
    out = {}
    for subset, mask in masks.items():
        n = int(mask.sum())
        if n < 2:
            out[subset] = {"n": n}
            continue
        reconstruction = reconstruction_metrics(model, tokens[mask], z_mean[mask], z_log_var[mask], decoded[mask])
        per_attribute, disentanglement = attribute_metrics(model, z_mean[mask], attribute_values[mask],
                                                           info.regularised_dims(), options)
        out[subset] = {"n": n, "reconstruction": reconstruction, "attributes": per_attribute,
                       "disentanglement": disentanglement,
                       "summary": summarise(reconstruction, per_attribute, disentanglement)}
    return out


def summarise(reconstruction: dict, per_attribute: Dict[str, dict], disentanglement: dict) -> dict:
    """The headline numbers of the results table."""
    values = list(per_attribute.values())
    return {
        "reconstruction_accuracy": reconstruction["token_accuracy_free_running"],
        "measure_accuracy": reconstruction["measure_accuracy_free_running"],
        "interpretability_mean": float(np.mean([v["interpretability"]["r2"] for v in values])),
        "spearman_mean": float(np.mean([v["spearman"] for v in values])),
        "isotonic_r2_mean": float(np.mean([v["isotonic_r2"] for v in values])),
        "mig_mean": float(np.mean([v["mig"] for v in values])),
        "mig_attribute_code_mean": float(np.mean([v["mig_attribute_code"] for v in values])),
        "mig_ksg_mean": float(np.mean([v["mig_ksg"] for v in values])),
        "mig_ksg_attribute_code_mean": float(np.mean([v["mig_ksg_attribute_code"] for v in values])),
        "sap_mean": float(np.mean([v["sap"] for v in values])),
        "modularity": disentanglement["modularity"],
        "regularised_attributes": [n for n, v in per_attribute.items() if v["regularised"]],
    }


def evaluate(model: LatentModel, info: ModelInfo, tokens: np.ndarray, attribute_values: np.ndarray, *,
             data_dir: str, output_dir: str, tensorboard_dir: Optional[str] = None,
             options: Optional[EvalOptions] = None, timing: Optional[Dict[str, float]] = None,
             seen: Optional[np.ndarray] = None, split: str = "test", source: Optional[str] = None) -> dict:
    """Evaluate ``model`` on test measures; write metrics.json (+ figures) into ``output_dir``.

    ``seen`` (bool, one per measure) marks the test measures that also occur
    in the training data; every metric is then reported again for the seen and
    the unseen measures (``subsets``), and the summary carries the unseen
    accuracies beside the headline.  ``split`` and ``source`` only label the
    data in the report.  Returns the metrics dict that was written.
    """
    options = options or EvalOptions()
    timing = dict(timing or {})
    if len(tokens) < 2:
        raise ValueError(f"the {split} split of {data_dir} has {len(tokens)} measures; need at least 2")
    for name, dim in info.regularised_dims().items():
        if not 0 <= dim < info.z_dim:
            raise ValueError(f"regularisation of {name} uses dim {dim}, outside the {info.z_dim}-dim latent")
    attribute_values = np.asarray(attribute_values, np.float32)
    os.makedirs(output_dir, exist_ok=True)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[stage] = round(now - clock, 3)
        log.info("evaluate %s: %s took %.1f s", info.name, stage, timing[stage])
        clock = now

    z_mean, z_log_var = model.encode(tokens)
    lap("encode")
    decoded = model.decode(z_mean)
    reconstruction = reconstruction_metrics(model, tokens, z_mean, z_log_var, decoded)
    lap("reconstruction")
    per_attribute, disentanglement = attribute_metrics(model, z_mean, attribute_values, info.regularised_dims(),
                                                       options)
    lap("attribute_metrics")
    subsets: Dict[str, dict] = {}
    if seen is not None:
        seen = np.asarray(seen, bool)
        if seen.shape != (len(tokens),):
            raise ValueError(f"seen must hold one flag per test measure ({len(tokens)}); got shape {seen.shape}")
        subsets = subset_metrics(model, info, tokens, attribute_values, z_mean, z_log_var, decoded,
                                 {"seen": seen, "unseen": ~seen}, options)
        lap("subsets")
    figure_files: Dict[str, str] = {}
    if options.figures:
        figure_files, figure_data = make_figures(model, info, z_mean, attribute_values, per_attribute,
                                                 output_dir, tensorboard_dir, options)
        _save_npz_atomically(os.path.join(output_dir, FIGURE_DATA_FILE), figure_data)
        lap("figures")
    summary = summarise(reconstruction, per_attribute, disentanglement)
    unseen_summary = (subsets.get("unseen") or {}).get("summary") or {}
    summary["reconstruction_accuracy_unseen"] = unseen_summary.get("reconstruction_accuracy")
    summary["measure_accuracy_unseen"] = unseen_summary.get("measure_accuracy")
    timing["total"] = round(sum(v for k, v in timing.items() if k != "total"), 3)
    result = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": info.name, "config": info.config_name, "source": info.source, "path": info.path,
                  "z_dim": info.z_dim, "regularization": info.regularization},
        "data": {"data_dir": data_dir, "split": split, "source": source, "n_test": int(len(tokens)),
                 "n_seen": None if seen is None else int(seen.sum()),
                 "n_unseen": None if seen is None else int((~seen).sum())},
        "reconstruction": reconstruction,
        "attributes": per_attribute,
        "disentanglement": disentanglement,
        "subsets": subsets,
        "summary": summary,
        "figures": figure_files,
        "options": dataclasses.asdict(options),
        "timing_s": timing,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomically(os.path.join(output_dir, METRICS_FILE), result)
    if tensorboard_dir:
        _log_scalars(tensorboard_dir, summary, per_attribute)
    return result


# ---------------------------------------------------------------- files


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    return value


def write_json_atomically(path: str, data: dict) -> None:
    """JSON (no NaN: non-finite numbers become null) through a temp file and a rename."""
    text = json.dumps(_jsonable(data), indent=2, allow_nan=False)
    fileio.write_text(path, text + "\n")


def _save_npz_atomically(path: str, arrays: Dict[str, np.ndarray]) -> None:
    with fileio.atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def load_metrics(eval_dir: str) -> dict:
    """Read DIR/eval/metrics.json, checking its schema version."""
    path = os.path.join(eval_dir, METRICS_FILE)
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {data.get('schema_version')}; expected {SCHEMA_VERSION}")
    return data


def _log_scalars(log_dir: str, summary: dict, per_attribute: Dict[str, dict]) -> None:
    """The headline numbers as TensorBoard scalars (step 0) beside the figures."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for key, value in summary.items():
            if isinstance(value, float):
                tf.summary.scalar(f"eval/{key}", value, step=0)
        for name, entry in per_attribute.items():
            tf.summary.scalar(f"eval/interpretability/{name}", entry["interpretability"]["r2"], step=0)
    writer.flush()
    writer.close()
