"""The evaluation figures, drawn from arrays (matplotlib, Agg backend).

* Figure 1 (:func:`latent_scatter_figure`): test latents on the plane of two
  latent dims, coloured by each attribute, one panel per attribute.
* Figure 2 (:func:`attribute_surface_figure`): attribute surface maps -- a grid
  on the same plane is decoded (other dims fixed) and each cell is coloured by
  the attribute of the decoded measure.
* Figure 3 (:func:`traversal_figure`): piano rolls of the measures decoded
  along one dim from low to high, one row per traversed dim.

The drawing functions take plain arrays (and, for the surfaces, a decode
callable) and return a ``matplotlib.figure.Figure``; the ``*_panels`` helpers
draw one model's row into given axes so ``compare`` can stack several models
into one grid with the same code.  :func:`save_figure` writes the PNG
atomically and, optionally, logs it to TensorBoard.
"""

from __future__ import annotations

import io
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from music_attr_vae import fileio  # noqa: E402
from music_attr_vae.data import attributes as attrs  # noqa: E402

PANEL_SIZE = (3.6, 3.0)  # inches per panel (width, height)

# Attribute value ranges, so that colours mean the same in every panel and model.
ATTRIBUTE_RANGES = {
    "rhythmic_complexity": (0.0, 1.0),
    "pitch_range": (0.0, 1.0),
    "note_density": (0.0, 1.0),
    "contour": (-1.0, 1.0),
}
ATTRIBUTE_CMAPS = {"contour": "coolwarm"}


def pretty(name: str) -> str:
    """'rhythmic_complexity' -> 'rhythmic complexity'."""
    return name.replace("_", " ")


def colour_limits(name: str, values: np.ndarray) -> Tuple[float, float]:
    """Colour limits: the observed range, clipped to the attribute's possible range.

    The observed range keeps contrast for skewed attributes (rhythmic
    complexity rarely exceeds 0.6); clipping keeps panels of one attribute on
    comparable scales.  A signed attribute (contour) gets limits symmetric
    about 0 so that its diverging colour map puts 0 at the neutral colour; a
    constant map gets a small window around its value.
    """
    lo, hi = ATTRIBUTE_RANGES.get(name, (-np.inf, np.inf))
    vmin, vmax = float(np.min(values)), float(np.max(values))
    if lo < 0 < hi:
        vmax = max(abs(vmin), abs(vmax), 0.05)
        vmin = -vmax
    if vmax - vmin < 1e-3:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    return max(vmin, lo), min(vmax, hi)


def _new_figure(rows: int, cols: int, extra_height: float = 0.6) -> Tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + extra_height), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


# ---------------------------------------------------------------- Figure 1


def latent_scatter_panels(
    axes: Sequence, plane: np.ndarray, attribute_values: np.ndarray, dims: Sequence[int],
    names: Sequence[str] = attrs.ATTRIBUTE_NAMES, row_label: Optional[str] = None,
    limits: Optional[Dict[str, Tuple[float, float]]] = None,
) -> None:
    """One scatter per attribute of latents (N, 2) on dims ``dims``, coloured by the attribute.

    ``limits`` (attribute -> (vmin, vmax)) fixes the colour scale, e.g. to share it across models.
    """
    plane = np.asarray(plane)
    attribute_values = np.asarray(attribute_values)
    for k, (ax, name) in enumerate(zip(axes, names)):
        values = attribute_values[:, k]
        vmin, vmax = (limits or {}).get(name) or colour_limits(name, values)
        # Draw the highest values last so that rare high-attribute points stay visible.
        order = np.argsort(values, kind="stable")
        points = ax.scatter(
            plane[order, 0], plane[order, 1], c=values[order], s=4, alpha=0.8, linewidths=0,
            cmap=ATTRIBUTE_CMAPS.get(name, "viridis"), vmin=vmin, vmax=vmax, rasterized=True,
        )
        ax.figure.colorbar(points, ax=ax, label=pretty(name))
        ax.set_xlabel(f"z[{dims[0]}]")
        ax.set_ylabel(f"z[{dims[1]}]")
        ax.set_title(pretty(name) if row_label is None else f"{row_label}: {pretty(name)}", fontsize=10)


def latent_scatter_figure(
    plane: np.ndarray, attribute_values: np.ndarray, dims: Sequence[int], title: str,
    names: Sequence[str] = attrs.ATTRIBUTE_NAMES,
) -> Figure:
    """Figure 1: test latents on the plane of ``dims``, one panel per attribute."""
    fig, axes = _new_figure(1, len(names))
    latent_scatter_panels(axes[0], plane, attribute_values, dims, names)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- Figure 2


def attribute_surfaces(
    decode: Callable[[np.ndarray], np.ndarray], center: np.ndarray, dims: Sequence[int],
    x_values: np.ndarray, y_values: np.ndarray,
) -> np.ndarray:
    """Decode a grid on the plane of ``dims`` and measure every decoded measure.

    ``center`` (D,) fixes the other dims; ``decode`` maps latents (M, D) to
    tokens (M, 24).  Returns attributes of shape (K, len(y_values), len(x_values)),
    row i of each map being y_values[i] (image layout).
    """
    center = np.asarray(center, np.float32)
    xx, yy = np.meshgrid(np.asarray(x_values, np.float32), np.asarray(y_values, np.float32))
    z = np.repeat(center[None], xx.size, axis=0)
    z[:, dims[0]] = xx.ravel()
    z[:, dims[1]] = yy.ravel()
    values = attrs.compute_all(np.asarray(decode(z)))  # (M, K)
    return values.T.reshape(values.shape[1], *xx.shape)


def attribute_surface_panels(
    axes: Sequence, x_values: np.ndarray, y_values: np.ndarray, surfaces: np.ndarray,
    dims: Sequence[int], names: Sequence[str] = attrs.ATTRIBUTE_NAMES, row_label: Optional[str] = None,
    limits: Optional[Dict[str, Tuple[float, float]]] = None,
) -> None:
    """One attribute surface map per attribute (see :func:`attribute_surfaces`); ``limits`` as above."""
    extent = (float(x_values[0]), float(x_values[-1]), float(y_values[0]), float(y_values[-1]))
    for k, (ax, name) in enumerate(zip(axes, names)):
        vmin, vmax = (limits or {}).get(name) or colour_limits(name, surfaces[k])
        image = ax.imshow(
            surfaces[k], origin="lower", extent=extent, aspect="auto", interpolation="nearest",
            cmap=ATTRIBUTE_CMAPS.get(name, "viridis"), vmin=vmin, vmax=vmax,
        )
        ax.figure.colorbar(image, ax=ax, label=f"{pretty(name)} (decoded)")
        ax.set_xlabel(f"z[{dims[0]}]")
        ax.set_ylabel(f"z[{dims[1]}]")
        ax.set_title(pretty(name) if row_label is None else f"{row_label}: {pretty(name)}", fontsize=10)


def attribute_surface_figure(
    x_values: np.ndarray, y_values: np.ndarray, surfaces: np.ndarray, dims: Sequence[int], title: str,
    names: Sequence[str] = attrs.ATTRIBUTE_NAMES,
) -> Figure:
    """Figure 2: attribute surface maps on the plane of ``dims``, one panel per attribute."""
    fig, axes = _new_figure(1, len(names))
    attribute_surface_panels(axes[0], x_values, y_values, surfaces, dims, names)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- Figure 3


def traversal_figure(rows: List[dict], title: str) -> Figure:
    """Figure 3: one row of piano rolls per traversed dim, low values on the left.

    Each row is a dict with ``dim`` (int), ``attribute`` (name), ``steps``
    (S,) latent values, ``tokens`` (S, 24) decoded measures and ``values``
    (S,) the attribute of each decoded measure.
    """
    from music_attr_vae.serving import render

    cols = max(len(row["steps"]) for row in rows)
    fig = Figure(figsize=(2.1 * cols, 2.3 * len(rows) + 0.6), layout="constrained")
    # No shared y axis: every panel shows its own pitch span (with note names).
    axes = np.asarray(fig.subplots(len(rows), cols, squeeze=False))
    for r, row in enumerate(rows):
        for s in range(cols):
            ax = axes[r, s]
            if s >= len(row["steps"]):
                ax.set_axis_off()
                continue
            panel_title = f"z[{row['dim']}] = {row['steps'][s]:+.3g}\n{pretty(row['attribute'])} {row['values'][s]:.2f}"
            render.draw_piano_roll(ax, np.asarray(row["tokens"][s : s + 1]), title=panel_title)
            ax.title.set_fontsize(8)
            # Short beat ticks instead of the renderer's long caption, which overlaps in a strip.
            ax.set_xticks(range(5))
            ax.set_xticklabels(["1", "2", "3", "4", ""], fontsize=7)
            ax.set_xlabel("beat", fontsize=8)
            if s > 0:
                ax.set_ylabel("")
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- output


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """The figure encoded as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str, *, tensorboard_dir: Optional[str] = None, tag: Optional[str] = None,
                step: int = 0, dpi: int = 110) -> bytes:
    """Save ``fig`` as PNG at ``path`` (atomically); log it to TensorBoard when a dir is given.

    The image goes under ``tag`` (default: the file name without extension)
    in ``tensorboard_dir`` (e.g. DIR/tensorboard/eval).  Returns the PNG bytes.
    """
    png = figure_png(fig, dpi)
    fileio.write_bytes(path, png)
    if tensorboard_dir:
        log_png_to_tensorboard(png, tensorboard_dir, tag or os.path.splitext(os.path.basename(path))[0], step)
    return png


def log_png_to_tensorboard(png: bytes, log_dir: str, tag: str, step: int = 0) -> None:
    """Write PNG bytes as a TensorBoard image summary."""
    import tensorflow as tf

    image = tf.image.decode_png(png, channels=4)[None]
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        tf.summary.image(tag, image, step=step)
    writer.flush()
    writer.close()
