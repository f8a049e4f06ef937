"""Attribute traversals from a SavedModel: the logic behind ``music-attr-vae generate``.

Each traversal starts from a latent code (a draw from the prior, or one
measure of a tune) and sets the attribute's dim to ``steps`` evenly spaced
values from the low to the high end of the range fitted at export time (for a
bare dim number, -3..3).  :func:`run` writes ``traversal.mid``,
``traversal.abc``, ``traversal.png`` and ``traversal.json`` all or nothing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from music_attr_vae import fileio
from music_attr_vae.data import attributes as attrs
from music_attr_vae.evaluation import metrics
from music_attr_vae.serving import abc_writer, editing, render
from music_attr_vae.serving.limits import MAX_GRID, MAX_VALUES

OUTPUT_FILES = {k: f"traversal.{k}" for k in ("mid", "abc", "png", "json")}
MANIFEST = OUTPUT_FILES["json"]  # lists the files, so a later run knows which files in --out are its own


class GenerateError(ValueError):
    """A bad request, naming the flag at fault."""


@dataclasses.dataclass
class Request:
    """One generate request; the field names are the command's flag names."""

    attribute: str
    steps: int = 8
    seed: int = 0
    temperature: float = 0.0
    num_traversals: int = 1
    from_tune: Optional[str] = None
    tune_index: Optional[int] = None
    measure: int = 1


def check_request(served, request: Request) -> np.ndarray:
    """GenerateError naming the flag of a bad request, before any work; returns the traversal values."""
    try:
        served.dim_of(request.attribute)
    except ValueError as e:
        raise GenerateError(f"--attribute={request.attribute}: {e}") from e
    if request.steps < 2:
        raise GenerateError(f"--steps={request.steps}: a traversal needs at least 2 steps")
    if request.steps > MAX_VALUES:
        raise GenerateError(f"--steps={request.steps}: at most MAX_VALUES = {MAX_VALUES} steps per traversal")
    count = 1 if request.from_tune is not None else request.num_traversals
    if count * request.steps > MAX_GRID:
        raise GenerateError(f"--num_traversals={count} x --steps={request.steps} = {count * request.steps} "
                            f"measures: at most MAX_GRID = {MAX_GRID} per request")
    if request.temperature < 0 or not np.isfinite(request.temperature):
        raise GenerateError(f"--temperature={request.temperature}: must be a finite number >= 0")
    return served.traversal_values(request.attribute, request.steps)


def start_codes(served, request: Request):
    """(z (T, D), transpose, description per traversal) from the prior or a tune's measure."""
    if request.from_tune is None:
        if request.num_traversals < 1:
            raise GenerateError(f"--num_traversals={request.num_traversals}: must be >= 1")
        _, z = served.sample(request.num_traversals, seed=request.seed)
        return z, 0, [f"prior draw {i} (seed {request.seed})" for i in range(len(z))]
    try:
        tune = editing.load_tune(request.from_tune, request.tune_index)
        rows = editing.parse_measures(str(request.measure), tune, flag="--measure")
    except editing.EditError as e:
        raise GenerateError(str(e).replace("--tune=", "--from_tune=")) from e
    z = served.encode(tune.tokens[rows])
    return z, -tune.shift, [f"{tune.title}, bar {request.measure}"]


def _traversal_rows(tokens, starts, values, name, dim, transpose):
    """(JSON entries, token rows, titles, piano-roll options), one per traversal."""
    column = attrs.attribute_index(name) if name else None
    traversals, rows, titles, options = [], [], [], []
    for row, start in zip(tokens, starts):
        values_attr = attrs.compute_all(row)
        measures_json = [
            {"step": i, "z": float(v), "tokens": row[i].tolist(),
             "attributes": dict(zip(attrs.ATTRIBUTE_NAMES, map(float, values_attr[i])))}
            for i, v in enumerate(values)
        ]
        entry = {"start": start, "measures": measures_json}
        if column is not None:
            entry["rising_steps"] = metrics.monotone_step_fractions(values_attr[:, column])[1]  # strictly rising
        traversals.append(entry)
        rows.append(row)
        label_attr = (lambda i: f"\n{name} {values_attr[i, column]:.2f}") if column is not None else (lambda i: "")
        titles.append(f"{start}: dim {dim} from {values[0]:.2f} to {values[-1]:.2f}")
        options.append({"bar_labels": [f"z={v:.2f}{label_attr(i)}" for i, v in enumerate(values)],
                        "transpose": transpose})
    return traversals, rows, titles, options


def run(served, request: Request, out_dir: str) -> dict:
    """Generate the traversals and write the four files (all or nothing); returns the JSON document."""
    values = check_request(served, request)
    dim = served.dim_of(request.attribute)
    z, transpose, starts = start_codes(served, request)
    tokens, _ = served.traverse_z(z, request.attribute, values, request.temperature, request.seed)
    name = request.attribute if request.attribute in served.maps else None
    traversals, rows, titles, options = _traversal_rows(tokens, starts, values, name, dim, transpose)

    label = name or f"dim {dim}"
    abc = "\n".join(
        abc_writer.tokens_to_abc(
            row, title=f"{label} traversal {t + 1}", reference=t + 1, transpose=transpose, key="auto"
        )
        for t, row in enumerate(rows)
    )
    document = {
        "saved_model": served.path,
        "model_name": served.metadata.get("model_name"),
        "attribute": request.attribute,
        "dim": dim,
        "values": values.tolist(),
        "value_range": served.maps[name]["value_range"] if name else None,
        "seed": request.seed,
        "temperature": request.temperature,
        "attribute_names": list(attrs.ATTRIBUTE_NAMES),
        "traversals": traversals,
        "files": dict(OUTPUT_FILES),
    }
    if name is not None:
        document["rising_steps"] = float(np.mean([t["rising_steps"] for t in traversals]))

    def write(folder: str) -> None:
        paths = {k: os.path.join(folder, file_name) for k, file_name in OUTPUT_FILES.items()}
        render.write_midi(np.concatenate(rows), paths["mid"], transpose=transpose)
        fileio.write_text(paths["abc"], abc)
        render.save_piano_roll_rows(rows, paths["png"], titles, options)
        fileio.write_json(paths["json"], document)

    try:
        fileio.publish_files(out_dir, list(OUTPUT_FILES.values()), MANIFEST, write)
    except OSError as err:
        raise GenerateError(editing.output_error("--out", out_dir, err)) from err
    return document
