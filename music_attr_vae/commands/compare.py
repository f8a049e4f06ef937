"""``music-attr-vae compare``: a results table and figure grids across evaluated models.

    music-attr-vae compare DIR1 DIR2 ... [--output=results.md] [--names=base,rhy,...]

Each DIR is a training workdir (its eval/metrics.json is read; a workdir not
yet evaluated is evaluated first unless --noevaluate_missing), an eval dir, or
a metrics.json file.  The Markdown table is printed and, with --output,
written there together with <stem>_figure1_latent_space_grid.png and
<stem>_figure2_attribute_surfaces_grid.png.
"""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string("output", None, "Markdown file to write (figure grids go beside it).")
flags.DEFINE_list("names", None, "Comma-separated model names, one per DIR (default: from each metrics.json).")
flags.DEFINE_boolean("evaluate_missing", True, "Evaluate a workdir that has no eval/metrics.json yet.")


def main(argv):
    from absl import app

    paths = argv[1:]
    if not paths:
        raise app.UsageError("usage: music-attr-vae compare DIR1 [DIR2 ...] [--output=FILE.md]")
    if FLAGS.output and not FLAGS.output.endswith(".md"):
        raise app.UsageError(f"--output={FLAGS.output} should be a Markdown file ending in .md")
    from music_attr_vae.evaluation import compare

    try:
        text = compare.compare(paths, FLAGS.output, names=FLAGS.names, evaluate_missing=FLAGS.evaluate_missing)
    except (FileNotFoundError, ValueError) as err:
        raise app.UsageError(str(err)) from None
    print(text)
