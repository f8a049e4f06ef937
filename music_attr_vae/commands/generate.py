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
traversal.json lists it).  ``--steps`` is at most ``MAX_VALUES`` and
``--num_traversals`` x ``--steps`` at most ``MAX_GRID``.
The work is done by :mod:`music_attr_vae.serving.generate`.
"""

from __future__ import annotations

import sys

from absl import flags

from music_attr_vae.serving.limits import MAX_GRID, MAX_VALUES

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


def _fail(message: str) -> int:
    print(f"music-attr-vae generate: {message}", file=sys.stderr)
    return 2


def main(argv) -> int:
    if len(argv) > 1:
        return _fail(f"unexpected arguments {argv[1:]} (flags look like --name=value)")
    for name in ("saved_model", "attribute", "out"):
        if not getattr(FLAGS, name):
            return _fail(f"--{name} is required")
    from music_attr_vae.serving import editing, generate
    from music_attr_vae.serving.client import ServedModel, answer_once

    try:
        editing.check_out(FLAGS.out, list(generate.OUTPUT_FILES.values()), generate.MANIFEST)
    except editing.EditError as e:
        return _fail(str(e))
    try:
        served = ServedModel(FLAGS.saved_model)
        answer_once(served)
    except (FileNotFoundError, ValueError) as e:
        return _fail(f"--saved_model={FLAGS.saved_model}: {e}")
    request = generate.Request(
        attribute=FLAGS.attribute, steps=FLAGS.steps, seed=FLAGS.seed, temperature=FLAGS.temperature,
        num_traversals=FLAGS.num_traversals, from_tune=FLAGS.from_tune, tune_index=FLAGS.tune_index,
        measure=FLAGS.measure,
    )
    try:
        document = generate.run(served, request, FLAGS.out)
    except generate.GenerateError as e:
        return _fail(str(e))
    summary = f"rising in {document['rising_steps']:.0%} of steps" if "rising_steps" in document else ""
    print(f"wrote {len(document['traversals'])} traversal(s) of {FLAGS.steps} measures to {FLAGS.out} {summary}")
    return 0
