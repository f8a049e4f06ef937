"""``music-attr-vae generate``: attribute traversals from a SavedModel.

Example::

    music-attr-vae generate --saved_model=runs/rhy_pr/saved_model \
        --attribute=rhythmic_complexity --steps=8 --out=traversal/

Each traversal starts from a latent code (a draw from the prior with
``--seed``, or the ``--measure`` of ``--from_tune``) and sets the attribute's
dim to ``--steps`` evenly spaced values from the low to the high end of the
range fitted at export time (for a bare dim number, -3..3).  ``--out`` is a
directory (created) that receives ``traversal.mid`` (all traversals one after
another), ``traversal.abc`` (one tune per traversal), ``traversal.png`` (one
piano-roll row per traversal) and ``traversal.json`` (every measure's tokens
and attributes, and how often the attribute rose from one step to the next).
The four files are written all or nothing, and a file of one of those names
already in ``--out`` is replaced only if an earlier run wrote it (its
traversal.json lists it).  ``--steps`` is at most ``export.MAX_VALUES`` and
``--num_traversals`` x ``--steps`` at most ``export.MAX_GRID``.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

from music_attr_vae import fileio
from music_attr_vae.export import MAX_GRID, MAX_VALUES

FLAGS = flags.FLAGS

flags.DEFINE_string("saved_model", None, "Directory of an exported SavedModel.")
flags.DEFINE_string("attribute", None, "A regularised attribute name, or a latent dim number.")
flags.DEFINE_integer("steps", 8, f"Measures per traversal (2..MAX_VALUES = {MAX_VALUES}).")
flags.DEFINE_string("out", None, "Output directory (created).")
flags.DEFINE_integer("seed", 0, "Seed of the prior draw (and of sampling when --temperature > 0).",
                     lower_bound=0, upper_bound=2**31 - 1)
flags.DEFINE_float("temperature", 0.0, "Decoding temperature; 0 = greedy.")
flags.DEFINE_integer("num_traversals", 1, "Traversals from independent prior draws (ignored with --from_tune); "
                     f"--num_traversals x --steps <= MAX_GRID = {MAX_GRID}.")
flags.DEFINE_string("from_tune", None, "Start from a measure of this ABC / MIDI tune instead of the prior.")
flags.DEFINE_integer("tune_index", None, "Which tune of --from_tune when it holds several (0-based).")
flags.DEFINE_integer("measure", 1, "Bar of --from_tune to start from (1 = first full bar).")


OUTPUT_FILES = {k: f"traversal.{k}" for k in ("mid", "abc", "png", "json")}
MANIFEST = OUTPUT_FILES["json"]  # lists the files, so a later run knows which files in --out are its own


class GenerateError(ValueError):
    """A bad request, naming the flag at fault."""


def _fail(message: str) -> int:
    print(f"music-attr-vae generate: {message}", file=sys.stderr)
    return 2


def monotone_fraction(values: np.ndarray) -> float:
    """Share of consecutive steps where ``values`` rises (strictly)."""
    steps = np.diff(np.asarray(values, np.float64))
    return float(np.mean(steps > 0)) if steps.size else 0.0


def _start_codes(served):
    """(z (T, D), transpose, description per traversal) from the prior or a tune's measure."""
    if FLAGS.from_tune is None:
        if FLAGS.num_traversals < 1:
            raise GenerateError(f"--num_traversals={FLAGS.num_traversals}: must be >= 1")
        _, z = served.sample(FLAGS.num_traversals, seed=FLAGS.seed)
        return z, 0, [f"prior draw {i} (seed {FLAGS.seed})" for i in range(len(z))]
    from music_attr_vae import editing

    try:
        tune = editing.load_tune(FLAGS.from_tune, FLAGS.tune_index)
        rows = editing.parse_measures(str(FLAGS.measure), tune, flag="--measure")
    except editing.EditError as e:
        raise GenerateError(str(e).replace("--tune=", "--from_tune=")) from e
    z = served.encode(tune.tokens[rows])
    return z, -tune.shift, [f"{tune.title}, bar {FLAGS.measure}"]


def run(served, out_dir: str) -> dict:
    """Generate the traversals and write the four files (all or nothing); returns the JSON document."""
    from music_attr_vae import editing, render
    from music_attr_vae.data import attributes as attrs

    try:
        dim = served.dim_of(FLAGS.attribute)
    except ValueError as e:
        raise GenerateError(f"--attribute={FLAGS.attribute}: {e}") from e
    if FLAGS.steps < 2:
        raise GenerateError(f"--steps={FLAGS.steps}: a traversal needs at least 2 steps")
    if FLAGS.steps > MAX_VALUES:
        raise GenerateError(f"--steps={FLAGS.steps}: at most MAX_VALUES = {MAX_VALUES} steps per traversal")
    count = 1 if FLAGS.from_tune is not None else FLAGS.num_traversals
    if count * FLAGS.steps > MAX_GRID:
        raise GenerateError(f"--num_traversals={count} x --steps={FLAGS.steps} = {count * FLAGS.steps} "
                            f"measures: at most MAX_GRID = {MAX_GRID} per request")
    values = served.traversal_values(FLAGS.attribute, FLAGS.steps)
    if FLAGS.temperature < 0 or not np.isfinite(FLAGS.temperature):
        raise GenerateError(f"--temperature={FLAGS.temperature}: must be a finite number >= 0")
    z, transpose, starts = _start_codes(served)
    tokens, _ = served.traverse_z(z, FLAGS.attribute, values, FLAGS.temperature, FLAGS.seed)
    name = FLAGS.attribute if FLAGS.attribute in served.maps else None
    column = attrs.attribute_index(name) if name else None

    traversals, rows, titles, options = [], [], [], []
    for t, (row, start) in enumerate(zip(tokens, starts)):
        values_attr = attrs.compute_all(row)
        measures_json = [
            {"step": i, "z": float(v), "tokens": row[i].tolist(),
             "attributes": dict(zip(attrs.ATTRIBUTE_NAMES, map(float, values_attr[i])))}
            for i, v in enumerate(values)
        ]
        entry = {"start": start, "measures": measures_json}
        if column is not None:
            entry["rising_steps"] = monotone_fraction(values_attr[:, column])
        traversals.append(entry)
        rows.append(row)
        label_attr = (lambda i: f"\n{name} {values_attr[i, column]:.2f}") if column is not None else (lambda i: "")
        titles.append(f"{start}: dim {dim} from {values[0]:.2f} to {values[-1]:.2f}")
        options.append({"bar_labels": [f"z={v:.2f}{label_attr(i)}" for i, v in enumerate(values)],
                        "transpose": transpose})

    label = name or f"dim {dim}"
    abc = "\n".join(
        render.tokens_to_abc(
            row, title=f"{label} traversal {t + 1}", reference=t + 1, transpose=transpose, key="auto"
        )
        for t, row in enumerate(rows)
    )
    document = {
        "saved_model": served.path,
        "model_name": served.metadata.get("model_name"),
        "attribute": FLAGS.attribute,
        "dim": dim,
        "values": values.tolist(),
        "value_range": served.maps[name]["value_range"] if name else None,
        "seed": FLAGS.seed,
        "temperature": FLAGS.temperature,
        "attribute_names": list(attrs.ATTRIBUTE_NAMES),
        "traversals": traversals,
        "files": dict(OUTPUT_FILES),
    }
    if column is not None:
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


def main(argv) -> int:
    if len(argv) > 1:
        return _fail(f"unexpected arguments {argv[1:]} (flags look like --name=value)")
    for name in ("saved_model", "attribute", "out"):
        if not getattr(FLAGS, name):
            return _fail(f"--{name} is required")
    from music_attr_vae.export import ServedModel

    from music_attr_vae import editing

    try:
        editing.check_out(FLAGS.out, list(OUTPUT_FILES.values()), MANIFEST)
    except editing.EditError as e:
        return _fail(str(e))
    try:
        served = ServedModel(FLAGS.saved_model)
    except (FileNotFoundError, ValueError) as e:
        return _fail(f"--saved_model={FLAGS.saved_model}: {e}")
    try:
        document = run(served, FLAGS.out)
    except GenerateError as e:
        return _fail(str(e))
    summary = f"rising in {document['rising_steps']:.0%} of steps" if "rising_steps" in document else ""
    print(f"wrote {len(document['traversals'])} traversal(s) of {FLAGS.steps} measures to {FLAGS.out} {summary}")
    return 0
