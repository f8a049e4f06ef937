"""The on-disk format of a prepared dataset: file names, feature keys and types, the error type.

One record per kept *measure* (not per transposition).  A measure's tokens
are stored in its lowest allowed key; ``transposition`` is that lowest shift
(semitones from the tune as written) and ``num_transpositions`` how many
consecutive shifts, from there upwards, keep the whole tune in MIDI 55..84.
The four attributes are transposition invariant, so they are stored once.
:func:`music_attr_vae.data.loader.make_dataset` expands every record into its
``num_transpositions`` examples with a ``tf.data`` map (pitch tokens + k,
``transposition`` + k for k = 0 .. num_transpositions - 1).

This module is the one description of the records: the writer
(:mod:`.writer`), the loader and the TFDS builder all read :data:`FEATURES`.
It imports neither TensorFlow nor the rest of the pipeline.
"""

from __future__ import annotations

import re
from typing import Dict, Tuple

from music_attr_vae.data import attributes

from music_attr_vae.data.codec import CODEC

SPLITS = ("train", "validation", "test")
SUMMARY_FILE = "summary.json"
# Written last into every prepared folder: the sha256 of its summary.json.  A folder is
# replaced only when this marker matches and it holds nothing but the files its summary lists.
MARKER_FILE = ".music_attr_vae_prepared"
# 1: one record per (measure, transposition).  2: one record per measure + its shift range.
FORMAT_VERSION = 2
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

TOKENS_KEY = "tokens"
TUNE_ID_KEY = "tune_id"
MEASURE_INDEX_KEY = "measure_index"
TRANSPOSITION_KEY = "transposition"
NUM_TRANSPOSITIONS_KEY = "num_transpositions"

# key -> (dtype name, shape), in the order the summary lists them.  "int64", "float" and
# "bytes" are the three tf.train.Example list kinds.
FEATURES: Dict[str, Tuple[str, Tuple[int, ...]]] = {
    TOKENS_KEY: ("int64", (CODEC.ticks_per_measure,)),
    **{name: ("float", ()) for name in attributes.ATTRIBUTE_NAMES},
    TUNE_ID_KEY: ("bytes", ()),
    MEASURE_INDEX_KEY: ("int64", ()),
    TRANSPOSITION_KEY: ("int64", ()),
    NUM_TRANSPOSITIONS_KEY: ("int64", ()),
}

# Features of one *expanded* example (what load_arrays returns per row, besides tokens/attributes).
EXAMPLE_LABELS = (TUNE_ID_KEY, MEASURE_INDEX_KEY, TRANSPOSITION_KEY)


def describe_features() -> Dict[str, str]:
    """``{key: "int64[24]" | "float" | "bytes" | "int64"}``: the ``features`` entry of summary.json."""
    return {key: f"{kind}[{shape[0]}]" if shape else kind for key, (kind, shape) in FEATURES.items()}


def shard_name(split: str, index: int, count: int) -> str:
    """File name of one shard, ``<split>.tfrecord-NNNNN-of-MMMMM``."""
    return f"{split}.tfrecord-{index:05d}-of-{count:05d}"


SHARD_NAME = re.compile(rf"({'|'.join(SPLITS)})\.tfrecord-\d{{5}}-of-\d{{5}}")


class PrepareError(ValueError):
    """A bad argument of ``prepare``; ``param`` names it (the CLI flag has the same name)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message
