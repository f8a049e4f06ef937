"""``music-attr-vae train``: train (or resume) a MeasureVAE from a config file.

Examples::

    music-attr-vae train --config=configs/rhy_pr.py --workdir=runs/rhy_pr \\
        --source=/data/nottingham --config.train.epochs=3
    music-attr-vae train --config=configs/quick.py --workdir=/tmp/q --source=/tmp/prepared

``--source`` is a folder prepared by ``music-attr-vae prepare`` (used as is),
or ABC/MIDI files (a file, folder or glob) prepared into ``WORKDIR/data``;
without it the folk-rnn corpus is downloaded once into ``--cache_dir``.
Any config field can be overridden with ``--config.<field>=<value>``.
Running it again on the same ``--workdir`` resumes from the last checkpoint.
"""

from __future__ import annotations

import sys

from absl import flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/rhy_pr.py (fields: see configs/common.py).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, TensorBoard logs, the SavedModel.")
_SOURCE = flags.DEFINE_string(
    "source", None,
    "Prepared shards folder, or ABC/MIDI file/folder/glob to prepare into WORKDIR/data, or 'folk_rnn' (the default).",
)
_STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", ["auto", "default", "mirrored", "multi_worker"],
    "auto: MirroredStrategy over all GPUs if any, else the default strategy; multi_worker reads TF_CONFIG.",
)
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Download cache for the folk-rnn corpus.")
_ALLOW_UNVERIFIED = flags.DEFINE_boolean(
    "allow_unverified_download", False,
    "Accept a folk-rnn download whose sha256 is not pinned (FOLK_RNN_SHA256 is unset), as prepare does.",
)
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar with throughput on stderr.")

flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str, code: int = 2) -> int:
    print(f"music-attr-vae train: error: {message}", file=sys.stderr)
    return code


def main(argv) -> int:
    if len(argv) > 1:
        return _fail(f"unexpected arguments {argv[1:]}; every option is a --flag")
    if not flags.FLAGS["verbosity"].present:  # TF's INFO lines (checkpoint sharding, ...) drown the progress bar
        logging.set_verbosity(logging.WARNING)
    from music_attr_vae import training
    from music_attr_vae.configs_loader import validate_config

    try:
        config = _CONFIG.value
        config.get("name", None)  # a config that failed to load raises on first use
    except OSError as err:  # ml_collections reports a missing or broken config file only here
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return _fail(f"--config={flags.FLAGS['config'].config_filename}: cannot load the config file ({lines[-1]})")
    try:
        validate_config(config)
    except ValueError as err:
        return _fail(f"--config: {err}")
    try:
        result = training.train(
            config, _WORKDIR.value, source=_SOURCE.value, strategy=_STRATEGY.value,
            progress=_PROGRESS.value, cache_dir=_CACHE_DIR.value,
            allow_unverified_download=_ALLOW_UNVERIFIED.value,
        )
    except training.NonFiniteLossError as err:
        return _fail(str(err), code=1)
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError) as err:
        return _fail(str(err))
    except OSError as err:  # the workdir cannot be written: a read-only or full disk
        return _fail(f"--workdir={_WORKDIR.value}: {err.strerror or err} ({err.filename or _WORKDIR.value})")
    speed = result["examples_per_second"]
    speed = f"{speed:.0f} examples/s" if speed > 0 else "nothing left to train (re-exported)"
    print(
        f"{result['stopped']}: step {result['steps']}, {result['epochs_done']} epochs, "
        f"{speed}; SavedModel: {result['saved_model']}"
    )
    return 0
