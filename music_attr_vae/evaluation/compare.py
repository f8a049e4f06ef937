"""A results table and figure grids across evaluated models.

:func:`compare` reads each model's ``eval/metrics.json`` (evaluating the
workdir first when it is missing and ``evaluate_missing`` is set) and renders:

* the main table, one row per model, in the layout of the paper's results:
  name and config, reconstruction accuracy, interpretability per attribute
  and their mean, then Spearman, MIG, SAP and Modularity (means over the four
  attributes, see evaluate.py); a ``*`` marks an attribute the model regularises;
* a per-attribute detail table (probe dim, linear / isotonic R^2, Spearman,
  MIG, SAP and control on decoded output);
* Figures 1 and 2 for all models side by side (one column per model), redrawn
  from each model's ``eval/figure_data.npz`` so nothing is decoded again.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from music_attr_vae import fileio
from music_attr_vae import workdir as wd
from music_attr_vae.data import attributes as attrs
from music_attr_vae.evaluation import entry_points
from music_attr_vae.evaluation import evaluate as ev
from music_attr_vae.evaluation import figures

SHORT_NAMES = {
    "rhythmic_complexity": "RC",
    "pitch_range": "PR",
    "note_density": "ND",
    "contour": "C",
}
GRID_FILES = {
    "latent_space": "figure1_latent_space_grid.png",
    "attribute_surfaces": "figure2_attribute_surfaces_grid.png",
}


def eval_dir_of(path: str) -> str:
    """Accept a workdir, its eval/ dir or a metrics.json path; return the eval dir."""
    path = os.path.abspath(path)
    if os.path.basename(path) == ev.METRICS_FILE:
        return os.path.dirname(path)
    if os.path.exists(os.path.join(path, ev.METRICS_FILE)):
        return path
    return wd.path(path, wd.EVAL_DIR)


def load_or_evaluate(path: str, evaluate_missing: bool = True,
                     options: Optional[ev.EvalOptions] = None) -> Tuple[dict, str]:
    """(metrics, eval dir) of one model; evaluates a workdir without metrics when allowed."""
    eval_dir = eval_dir_of(path)
    if os.path.exists(os.path.join(eval_dir, ev.METRICS_FILE)):
        return ev.load_metrics(eval_dir), eval_dir
    workdir = os.path.dirname(eval_dir)
    if not evaluate_missing:
        raise FileNotFoundError(
            f"{path}: no {ev.METRICS_FILE} in {eval_dir}; run `music-attr-vae evaluate --workdir={workdir}` first"
        )
    if not wd.is_workdir(workdir):
        raise FileNotFoundError(f"{path} is neither an evaluated model (no {eval_dir}/{ev.METRICS_FILE}) "
                                f"nor a training workdir (no {wd.CONFIG_FILE})")
    return entry_points.evaluate_workdir(workdir, options=options), eval_dir


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def results_table(results: Sequence[dict]) -> str:
    """The main Markdown table, one row per model."""
    names = attrs.ATTRIBUTE_NAMES
    header = (["Model", "Config", "Recon. acc. (free-running)", "Recon. acc. unseen", "Measures exact unseen",
               "Recon. acc. (teacher-forced)"]
              + [f"Interp. {SHORT_NAMES[n]}" for n in names]
              + ["Interp. mean", "Spearman", "MIG", "SAP", "Modularity"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        rec, per, summ = r["reconstruction"], r["attributes"], r["summary"]
        interp = [_fmt(per[n]["interpretability"]["r2"]) + ("*" if per[n]["regularised"] else "") for n in names]
        row = ([r["model"]["name"], r["model"]["config"], _pct(rec["token_accuracy_free_running"]),
                _pct(summ.get("reconstruction_accuracy_unseen")), _pct(summ.get("measure_accuracy_unseen")),
                _pct(rec["token_accuracy_teacher_forced"])] + interp
               + [_fmt(summ["interpretability_mean"]), _fmt(summ["spearman_mean"]), _fmt(summ["mig_mean"]),
                  _fmt(summ["sap_mean"]), _fmt(summ["modularity"])])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def detail_table(results: Sequence[dict]) -> str:
    """Per model and attribute: the probe dim and every metric measured on it."""
    header = ["Model", "Attribute", "Dim", "Interp. R² (dim)", "Isotonic R²", "Spearman", "MIG", "SAP",
              "Control: monotone steps", "Control: rising steps", "Control: Spearman"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        for name in attrs.ATTRIBUTE_NAMES:
            e = r["attributes"][name]
            c = e.get("controllability") or {}
            dim = f"{e['probe_dim']} ({'regularised' if e['regularised'] else 'max MI'})"
            lines.append("| " + " | ".join([
                r["model"]["name"], name, dim,
                f"{_fmt(e['interpretability']['r2'])} ({e['interpretability']['dim']})",
                _fmt(e["isotonic_r2"]), _fmt(e["spearman"]), _fmt(e["mig"]), _fmt(e["sap"]),
                _fmt(c.get("monotone_fraction")), _fmt(c.get("strictly_increasing_fraction")),
                _fmt(c.get("spearman")),
            ]) + " |")
    return "\n".join(lines)


LEGEND = """\
Recon. acc.: token accuracy on the test split, decoding z_mean greedily (free-running, the headline)
or with teacher forcing; "unseen" counts only the test measures that do not occur, token for token, in
the training split (n/a for a model evaluated before this was measured), and "Measures exact unseen" is
the share of those decoded without a single wrong token. Interp.: interpretability (Adel et al. 2018, linear regression on the dim with
the highest mutual information); `*` marks an attribute the model regularises. Spearman, MIG and SAP are
means over the four attributes (Spearman on the regularised dim, or |rho| on the max-MI dim of an
unregularised attribute); Modularity is over all latent dims. RC rhythmic complexity, PR pitch range,
ND note density, C contour."""


def figure_grid(kind: str, entries: Sequence[Tuple[str, dict]]):
    """Figure 1 or 2 for several models: one column per model, one row per attribute."""
    from matplotlib.figure import Figure

    names = attrs.ATTRIBUTE_NAMES
    fig = Figure(figsize=(figures.PANEL_SIZE[0] * len(entries), figures.PANEL_SIZE[1] * len(names) + 0.6),
                 layout="constrained")
    axes = np.asarray(fig.subplots(len(names), len(entries), squeeze=False))
    # One colour scale per attribute across all models, so colours compare between columns.
    if kind == "latent_space":
        pooled = [np.concatenate([d["plane_attributes"][:, k] for _, d in entries]) for k in range(len(names))]
    else:
        pooled = [np.concatenate([d["surfaces"][k].ravel() for _, d in entries]) for k in range(len(names))]
    limits = {name: figures.colour_limits(name, values) for name, values in zip(names, pooled)}
    for j, (label, data) in enumerate(entries):
        dims = [int(d) for d in data["plane_dims"]]
        if kind == "latent_space":
            figures.latent_scatter_panels(axes[:, j], data["plane"], data["plane_attributes"], dims, names,
                                          row_label=label, limits=limits)
        else:
            figures.attribute_surface_panels(axes[:, j], data["surface_x"], data["surface_y"], data["surfaces"],
                                             dims, names, row_label=label, limits=limits)
    fig.suptitle("Test latents coloured by attribute" if kind == "latent_space"
                 else "Attribute surface maps of decoded measures")
    return fig


def compare(paths: Sequence[str], output: Optional[str] = None, *, names: Optional[Sequence[str]] = None,
            evaluate_missing: bool = True, options: Optional[ev.EvalOptions] = None) -> str:
    """Build the comparison of the models at ``paths``; write it (and figure grids) when ``output`` is set.

    Returns the Markdown text.  Figure grids go beside ``output`` as
    ``<stem>_figure1_latent_space_grid.png`` and ``<stem>_figure2_attribute_surfaces_grid.png``.
    """
    if not paths:
        raise ValueError("compare needs at least one model directory")
    if names is not None and len(names) != len(paths):
        raise ValueError(f"--names has {len(names)} names for {len(paths)} models")
    results, eval_dirs = [], []
    for i, path in enumerate(paths):
        metrics_dict, eval_dir = load_or_evaluate(path, evaluate_missing, options)
        if names is not None:
            metrics_dict["model"]["name"] = names[i]
        results.append(metrics_dict)
        eval_dirs.append(eval_dir)
    text = "\n\n".join([results_table(results), LEGEND, "Per attribute:", detail_table(results)]) + "\n"
    if output:
        output = os.path.abspath(output)
        grids = write_figure_grids(results, eval_dirs, os.path.splitext(output)[0])
        if grids:
            text += "\n" + "\n".join(f"![{k}]({os.path.basename(p)})" for k, p in grids.items()) + "\n"
        fileio.write_text(output, text)
    return text


def write_figure_grids(results: Sequence[dict], eval_dirs: Sequence[str], stem: str) -> Dict[str, str]:
    """Write the Figure 1 and 2 grids from the models' figure_data.npz; skips models without one."""
    entries = []
    for result, eval_dir in zip(results, eval_dirs):
        path = os.path.join(eval_dir, ev.FIGURE_DATA_FILE)
        if os.path.exists(path):
            with np.load(path) as data:
                entries.append((result["model"]["name"], {k: data[k] for k in data.files}))
    if not entries:
        return {}
    written = {}
    for kind, suffix in GRID_FILES.items():
        path = f"{stem}_{suffix}"
        figures.save_figure(figure_grid(kind, entries), path)
        written[kind] = path
    return written
