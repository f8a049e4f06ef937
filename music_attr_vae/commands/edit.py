"""``music-attr-vae edit``: move attributes of chosen measures of a whole tune.

Example::

    music-attr-vae edit --saved_model=runs/rhy_pr/saved_model --tune=tune.abc \
        --measures=5-8 --set rhythmic_complexity=0.8 --out=edited/

Bars are numbered as a musician counts them in the played tune (repeats
expanded, bar 1 = the first full bar, a pickup is bar 0); see
``music_attr_vae/editing.py``.  ``--set`` takes ``NAME=VALUE`` (a target
value) or ``NAME+=DELTA`` / ``NAME-=DELTA`` (relative to each bar), and may
be repeated for several attributes.  Writes to ``--out`` (a directory):
``edited.mid``, ``edited.abc``, ``original.mid``, ``original.abc``,
``before_after.png`` and ``report.json`` (each bar's attributes before and
after).  Bars outside ``--measures`` are copied unchanged.  The six files
are written all or nothing; an existing ``--out`` keeps its other files, and
a file of one of those names there is replaced only if an earlier edit wrote
it (its report.json lists it).  A tune may have at most ``export.MAX_BATCH``
bars.
"""

from __future__ import annotations

import sys

from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string("saved_model", None, "Directory of an exported SavedModel.")
flags.DEFINE_string("tune", None, "An ABC, folk-rnn text or MIDI file holding the tune.")
flags.DEFINE_integer("tune_index", None, "Which tune of a file with several (0-based, file order).")
flags.DEFINE_string("measures", None, 'Bars to edit: "5", "5-8", "1,3,6-7" or "all".')
flags.DEFINE_multi_string("set", None, "NAME=VALUE, NAME+=DELTA or NAME-=DELTA; repeatable.")
flags.DEFINE_string("out", None, "Output directory (created).")
flags.DEFINE_float("temperature", 0.0, "Decoding temperature; 0 = greedy.")
flags.DEFINE_integer("seed", 0, "Seed of the sampling when --temperature > 0.", lower_bound=0, upper_bound=2**31 - 1)


def _fail(message: str) -> int:
    print(f"music-attr-vae edit: {message}", file=sys.stderr)
    return 2


def main(argv) -> int:
    if len(argv) > 1:
        return _fail(f"unexpected arguments {argv[1:]} (flags look like --name=value)")
    for name in ("saved_model", "tune", "measures", "set", "out"):
        if not getattr(FLAGS, name):
            return _fail(f"--{name} is required")
    from music_attr_vae.serving import editing
    from music_attr_vae.serving.client import ServedModel, answer_once
    from music_attr_vae.serving.limits import MAX_BATCH

    try:
        editing.check_out(FLAGS.out)
        tune = editing.load_tune(FLAGS.tune, FLAGS.tune_index)
        if len(tune.tokens) > MAX_BATCH:
            raise editing.EditError(f"--tune={FLAGS.tune}: {len(tune.tokens)} bars is more than MAX_BATCH = "
                                    f"{MAX_BATCH}, the most measures one request may encode")
        rows = editing.parse_measures(FLAGS.measures, tune)
        try:
            served = ServedModel(FLAGS.saved_model)
            answer_once(served)
        except (FileNotFoundError, ValueError) as e:
            raise editing.EditError(f"--saved_model={FLAGS.saved_model}: {e}") from e
        settings = editing.parse_settings(FLAGS.set, list(served.maps))
        result = editing.edit_tune(served, tune, rows, settings, FLAGS.temperature, FLAGS.seed)
        paths = editing.write_outputs(FLAGS.out, tune, result)
    except editing.EditError as e:
        return _fail(str(e))
    for bar in result.report["bars"]:
        if bar["edited"]:
            before, after, target = bar["attributes_before"], bar["attributes_after"], bar["targets"]
            changes = ", ".join(
                f"{s.attribute} {before[s.attribute]:.3f} -> {after[s.attribute]:.3f} (target {target[s.attribute]:.3f})"
                for s in settings
            )
            print(f"bar {bar['bar']}: {changes}")
    print(f"wrote {', '.join(sorted(paths.values()))}")
    return 0
