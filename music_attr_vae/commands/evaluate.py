"""``music-attr-vae evaluate``: metrics and figures of one trained model on the test split.

    music-attr-vae evaluate --workdir=DIR
    music-attr-vae evaluate --saved_model=DIR/saved_model --data_dir=PREPARED [--output_dir=OUT]
    music-attr-vae evaluate --workdir=DIR --source=../shared/data/oneills1850   # another corpus

Writes metrics.json (schema in music_attr_vae/evaluation/evaluate.py), the
three figures as PNG and figure_data.npz to DIR/eval (or --output_dir), and
the figures and headline numbers to TensorBoard under DIR/tensorboard/eval.
"""

from __future__ import annotations

import json

from absl import flags

from music_attr_vae.serving.limits import MAX_BATCH, MAX_GRID, MAX_VALUES

FLAGS = flags.FLAGS
SURFACE_MAX = int(MAX_GRID**0.5)  # Figure 2's grid: at most MAX_GRID decodes

flags.DEFINE_string("workdir", None, "Training workdir to evaluate (latest checkpoint; data dir from its config.json).")
flags.DEFINE_string("saved_model", None, "An exported SavedModel to evaluate instead of a workdir (needs --data_dir).")
flags.DEFINE_string("data_dir", None, "Prepared dataset whose test split is used (default for --workdir: the one it was trained on; 'seen' "
                    "still means in the workdir's own training split).")
flags.DEFINE_string("source", None, "Evaluate on every measure of this corpus (ABC/MIDI file, folder or glob; untransposed) "
                    "instead of the test split; 'seen' then means 'in the model's training split'.")
flags.DEFINE_string("output_dir", None, "Where metrics.json and the figures go (default: DIR/eval; with --source or "
                    "another --data_dir, DIR/eval/source-NAME-HASH or DIR/eval/data-NAME-HASH; for --saved_model, "
                    "eval/ beside it).")
flags.DEFINE_string("name", None, "Model name in the report (default: the workdir's base name).")
# Every size a request can ask for is bounded (the serving limits of music_attr_vae.serving.limits).
flags.DEFINE_integer("batch_size", 512, "Measures per encode/decode call.", lower_bound=1, upper_bound=MAX_BATCH)
flags.DEFINE_integer("mi_max_points", 5000, "Test latents used by the k-NN mutual-information estimator "
                     "(deterministic subsample).", lower_bound=1, upper_bound=MAX_BATCH)
flags.DEFINE_integer("traversal_latents", 200, "Test latents traversed per attribute for controllability.",
                     lower_bound=1, upper_bound=MAX_BATCH)
flags.DEFINE_integer("traversal_steps", 13, "Steps of each controllability traversal (mean-3sd .. mean+3sd); "
                     f"--traversal_latents x --traversal_steps <= MAX_GRID = {MAX_GRID}.",
                     lower_bound=2, upper_bound=MAX_VALUES)
flags.DEFINE_integer("surface_resolution", 25, "Figure 2 decodes a resolution x resolution grid.",
                     lower_bound=1, upper_bound=SURFACE_MAX)
flags.DEFINE_boolean("figures", True, "Draw the figures (--nofigures: metrics only).")
flags.DEFINE_integer("seed", 0, "Seed of every subsample and of the MI estimator.", lower_bound=0, upper_bound=2**31 - 1)


def options_from_flags():
    from music_attr_vae.evaluation.evaluate import EvalOptions

    return EvalOptions(
        batch_size=FLAGS.batch_size,
        mi_max_points=FLAGS.mi_max_points,
        traversal_latents=FLAGS.traversal_latents,
        traversal_steps=FLAGS.traversal_steps,
        surface_resolution=FLAGS.surface_resolution,
        figures=FLAGS.figures,
        seed=FLAGS.seed,
    )


def main(argv):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if bool(FLAGS.workdir) == bool(FLAGS.saved_model):
        raise app.UsageError("give exactly one of --workdir and --saved_model")
    if FLAGS.saved_model and not FLAGS.data_dir:
        raise app.UsageError("--saved_model needs --data_dir (the prepared dataset with the test split)")
    if FLAGS.traversal_latents * FLAGS.traversal_steps > MAX_GRID:
        raise app.UsageError(f"--traversal_latents={FLAGS.traversal_latents} x --traversal_steps="
                             f"{FLAGS.traversal_steps}: at most MAX_GRID = {MAX_GRID} decodes per traversal")
    from music_attr_vae.evaluation import entry_points

    try:
        options = options_from_flags()
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    try:
        if FLAGS.workdir:
            result = entry_points.evaluate_workdir(
                FLAGS.workdir, data_dir=FLAGS.data_dir, output_dir=FLAGS.output_dir, name=FLAGS.name,
                options=options, source=FLAGS.source,
            )
        else:
            result = entry_points.evaluate_saved_model(
                FLAGS.saved_model, FLAGS.data_dir, output_dir=FLAGS.output_dir, name=FLAGS.name, options=options,
                source=FLAGS.source,
            )
    except (OSError, ValueError) as err:  # a missing folder, a damaged checkpoint, an unwritable --output_dir
        raise app.UsageError(str(err)) from None
    data = result["data"]
    summary = dict(result["summary"], n_test=data["n_test"], n_unseen=data["n_unseen"], split=data["split"],
                   seconds=result["timing_s"]["total"])
    print(json.dumps(summary, indent=2))
