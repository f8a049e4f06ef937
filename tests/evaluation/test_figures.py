"""Figure helpers: the surface grid's orientation, labels and colour bars, atomic PNG output."""

from __future__ import annotations

import numpy as np

from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC
from music_attr_vae.evaluation import figures


def _decode_by_rule(z: np.ndarray) -> np.ndarray:
    """Measures whose note density follows z[:, 1] and whose pitch range follows z[:, 3]."""
    tokens = np.full((len(z), CODEC.ticks_per_measure), CODEC.hold, np.int32)
    for i, row in enumerate(z):
        onsets = int(np.clip(row[1], 1, 12))
        ticks = np.arange(onsets) * (CODEC.ticks_per_measure // onsets)
        tokens[i, ticks] = 0
        tokens[i, ticks[-1]] = int(np.clip(row[3], 0, 29))  # the last note sets the range
    return tokens


def test_attribute_surfaces_put_x_on_columns_and_y_on_rows():
    x_values = np.arange(2, 8, dtype=np.float32)  # dim 1 -> note density
    y_values = np.arange(3, 26, 5, dtype=np.float32)  # dim 3 -> pitch range
    surfaces = figures.attribute_surfaces(_decode_by_rule, np.zeros(5), (1, 3), x_values, y_values)
    assert surfaces.shape == (len(attrs.ATTRIBUTE_NAMES), len(y_values), len(x_values))
    density = surfaces[attrs.attribute_index("note_density")]
    pitch_range = surfaces[attrs.attribute_index("pitch_range")]
    np.testing.assert_allclose(density, np.broadcast_to(x_values / 24.0, density.shape), atol=1e-6)
    np.testing.assert_allclose(pitch_range, np.broadcast_to((y_values / 29.0)[:, None], pitch_range.shape), atol=1e-6)


def test_figures_have_titles_labels_and_colour_bars(tmp_path):
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(300, 2))
    values = np.column_stack([rng.uniform(size=300), rng.uniform(size=300), rng.uniform(size=300),
                              rng.uniform(-1, 1, size=300)])
    fig = figures.latent_scatter_figure(plane, values, (0, 2), "scatter title")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(panels) == len(bars) == len(attrs.ATTRIBUTE_NAMES)
    assert [ax.get_title() for ax in panels] == [figures.pretty(n) for n in attrs.ATTRIBUTE_NAMES]
    assert all(ax.get_xlabel() == "z[0]" and ax.get_ylabel() == "z[2]" for ax in panels)
    assert fig._suptitle.get_text() == "scatter title"
    # The signed attribute gets a colour scale symmetric about 0.
    assert figures.colour_limits("contour", np.array([-0.2, 0.6])) == (-0.6, 0.6)
    assert figures.colour_limits("pitch_range", np.array([0.3, 0.3])) == (0.25, 0.35)

    path = tmp_path / "scatter.png"
    png = figures.save_figure(fig, str(path))
    assert path.read_bytes() == png and png[:4] == b"\x89PNG"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["scatter.png"]


def test_traversal_figure_draws_one_panel_per_step():
    steps = np.linspace(-3, 3, 4)
    tokens = _decode_by_rule(np.column_stack([np.zeros(4), [1, 3, 6, 12], np.zeros(4), [5, 9, 13, 17]]))
    rows = [{"dim": 1, "attribute": "note_density", "steps": steps, "tokens": tokens,
             "values": attrs.compute(tokens, "note_density")}]
    fig = figures.traversal_figure(rows, "strip")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4
    assert titles[0].startswith("z[1] = -3\n") and titles[-1].endswith(f"note density {12 / 24:.2f}")
