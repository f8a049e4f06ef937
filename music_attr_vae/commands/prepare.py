"""``music-attr-vae prepare``: ABC / MIDI / folk-rnn tunes -> TFRecord measure shards.

Example::

    music-attr-vae prepare --source=/data/nottingham --output_dir=/tmp/folk
    music-attr-vae prepare --source=/data/nottingham,/data/oneills1850 --output_dir=/tmp/folk2

Writes ``{train,validation,test}.tfrecord-NNNNN-of-MMMMM`` and ``summary.json``
into ``--output_dir`` and prints the counts (kept tunes, measures and examples
per split, drops by reason).  A bad flag value is reported with the flag name.
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags

_SOURCE = flags.DEFINE_string(
    "source", None, "An ABC or MIDI file, a directory, a glob, or 'folk_rnn' (downloaded into --cache_dir); "
    "several joined by commas (each split alone; a tune already kept from an earlier one is a duplicate_tune)."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to write the shards and summary.json into.")
_MAX_SHIFT = flags.DEFINE_integer(
    "max_shift", 12, "Transpose each tune by every shift in [-max_shift, max_shift] that keeps it in MIDI 55..84 "
    "(0: originals only)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split assignment and of the example shuffle.")
_SPLIT = flags.DEFINE_string("split", "0.8,0.1,0.1", "Fractions of tunes for train,validation,test.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None, "Shards per split (default: about 16 MiB each).")
_JOBS = flags.DEFINE_integer("jobs", None, "Worker processes (default: all cores when the corpus is large).")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Download cache for --source=folk_rnn.")
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar on stderr.")
_ALLOW_UNVERIFIED = flags.DEFINE_boolean(
    "allow_unverified_download", False,
    "Accept a --source=folk_rnn download whose sha256 is not pinned (FOLK_RNN_SHA256 is unset).",
)
_MELODY_TRACK = flags.DEFINE_string(
    "melody_track", None, "MIDI sources: read the melody from this track (its name, or its part number as note_seq "
    "counts them). Default: the monophonic part with the most notes in MIDI 55..84."
)
_MELODY_PROGRAM = flags.DEFINE_integer(
    "melody_program", None, "MIDI sources: read the melody from a part with this General MIDI program (0..127)."
)

flags.mark_flags_as_required(["source", "output_dir"])


def _fail(flag: str, message: str) -> int:
    print(f"music-attr-vae prepare: error: --{flag}: {message}", file=sys.stderr)
    return 2


def main(argv) -> int:
    del argv
    from music_attr_vae.data import prepare, sources

    try:
        fractions = prepare.parse_split_fractions(_SPLIT.value)
    except prepare.PrepareError as err:
        return _fail("split", f"{_SPLIT.value!r}: {err.message}")
    start = time.perf_counter()
    try:
        summary = prepare.prepare(
            _SOURCE.value,
            _OUTPUT_DIR.value,
            max_shift=_MAX_SHIFT.value,
            seed=_SEED.value,
            split_fractions=fractions,
            num_shards=_NUM_SHARDS.value,
            jobs=_JOBS.value,
            cache_dir=_CACHE_DIR.value,
            progress=_PROGRESS.value,
            allow_unverified_download=_ALLOW_UNVERIFIED.value,
            melody_track=_MELODY_TRACK.value,
            melody_program=_MELODY_PROGRAM.value,
        )
    except prepare.PrepareError as err:
        return _fail(err.param, err.message)
    except sources.SourceError as err:
        return _fail("source", str(err))
    elapsed = time.perf_counter() - start
    if os.path.abspath(summary["data_dir"]) != os.path.abspath(_OUTPUT_DIR.value):
        print(f"{_SOURCE.value} is already a prepared dataset; nothing written")
    else:
        print(f"prepared {summary['data_dir']} in {elapsed:.1f} s")
    print(prepare.format_counts(summary))
    return 0
