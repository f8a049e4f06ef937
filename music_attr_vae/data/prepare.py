"""Orchestration of ``prepare``: sources -> per-tune pipeline -> splits -> shards + ``summary.json``.

The jobs live in their own modules: :mod:`.schema` (record layout, file
names), :mod:`.pipeline` (raw tune -> measures, worker pool), :mod:`.splits`
(tune ids, split assignment, several sources, duplicates) and :mod:`.writer`
(``tf.train.Example`` bytes, TFRecord framing, shards).  This module checks
the arguments, owns the output folder (atomic install, never deleting what it
did not write) and writes the summary.  No TensorFlow is imported.

**Determinism.**  Tunes are processed in source order (sources as listed,
files sorted by the reader, tunes in file order), records are ordered by
tune and measure, and each split is then permuted by a generator seeded from
``seed``: the same input and parameters give byte-identical shards, whatever
``jobs`` is.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

from music_attr_vae import fileio
from music_attr_vae.data import attributes, splits, writer
from music_attr_vae.data.codec import CODEC
from music_attr_vae.data.pipeline import TuneResult, run_pipeline
from music_attr_vae.data.schema import (  # noqa: F401  (re-exported: the names callers of prepare use)
    DEFAULT_SPLIT_FRACTIONS,
    FORMAT_VERSION,
    MARKER_FILE,
    SHARD_NAME,
    SPLITS,
    SUMMARY_FILE,
    PrepareError,
    describe_features,
)
from music_attr_vae.data.splits import (  # noqa: F401
    DUPLICATE_TUNE,
    assign_splits,
    check_split_fractions,
    parse_split_fractions,
    tune_ids,
)

# Formats a prepared folder may have: 1 (one record per transposition) is still read and replaced.
READABLE_FORMAT_VERSIONS = (1, FORMAT_VERSION)
# Skipped tunes listed per reason in summary.json.
_DROP_EXAMPLES = 5


# ------------------------------------------------------------------ arguments and the output folder


def _check_int(param: str, value, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise PrepareError(param, f"must be an integer; got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise PrepareError(param, f"must be {bound}; got {value}")
    return int(value)


def _listed_files(path: str) -> Optional[List[str]]:
    """The files a prepared folder's summary lists (summary, marker, shards), or None when it is not one.

    A folder is prepared when its ``summary.json`` is this package's format
    (``format_version`` 1 or 2, the three splits) and every shard it lists exists.
    """
    try:
        summary = read_summary(path)
        if summary.get("format_version") not in READABLE_FORMAT_VERSIONS:
            return None
        shards = [name for split in SPLITS for name in summary["splits"][split]["shards"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(isinstance(n, str) and SHARD_NAME.fullmatch(n) for n in shards):
        return None
    if not all(os.path.isfile(os.path.join(path, n)) for n in shards):
        return None
    return [SUMMARY_FILE, MARKER_FILE, *shards]


def is_prepared_dir(path: str) -> bool:
    """Whether ``path`` holds a dataset written by :func:`prepare` (not merely a file named summary.json)."""
    return os.path.isdir(path) and _listed_files(path) is not None


def read_summary(path: str) -> dict:
    with open(os.path.join(path, SUMMARY_FILE), encoding="utf-8") as f:
        return json.load(f)


def _summary_digest(path: str) -> str:
    with open(os.path.join(path, SUMMARY_FILE), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _marker(summary_sha256: str) -> dict:
    return {"written_by": "music_attr_vae prepare", "format_version": FORMAT_VERSION, "summary_sha256": summary_sha256}


def _refuse_unless_ours(out: str, shown: str) -> None:
    """PrepareError unless the folder ``out`` holds only a dataset :func:`prepare` wrote, with its marker."""
    listed = _listed_files(out)
    if listed is None:
        raise PrepareError(
            "output_dir", f"{shown!r} exists, is not empty and is not a dataset written by prepare "
            f"(no valid {SUMMARY_FILE} with its shards); refusing to replace it"
        )
    try:
        with open(os.path.join(out, MARKER_FILE), encoding="utf-8") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        marker = None
    if marker != _marker(_summary_digest(out)):
        raise PrepareError(
            "output_dir", f"{shown!r} holds a {SUMMARY_FILE} that prepare did not write there (missing or stale "
            f"{MARKER_FILE}); refusing to replace it"
        )
    extra = sorted(set(os.listdir(out)) - set(listed))
    if extra:
        raise PrepareError(
            "output_dir", f"{shown!r} is a prepared dataset but also holds {os.path.join(shown, extra[0])!r}"
            f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}, which prepare did not write; "
            "refusing to replace it (move those files out, or choose another --output_dir)"
        )


def _check_output_dir(output_dir: str) -> str:
    if not output_dir:
        raise PrepareError("output_dir", "is empty")
    out = os.path.abspath(output_dir)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise PrepareError("output_dir", f"the parent directory of {output_dir!r} does not exist ({parent})")
    try:
        fileio.recover_dir(out)  # leftovers of a killed prepare
    except OSError as err:
        raise PrepareError("output_dir", f"cannot clean up after an interrupted prepare of {output_dir!r}: {err}") from None
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise PrepareError("output_dir", f"{output_dir!r} exists and is not a directory")
        if os.listdir(out):
            _refuse_unless_ours(out, output_dir)
    return out



# ------------------------------------------------------------------ summary


def _attribute_stats(summaries: List[np.ndarray], count: int) -> Dict[str, Dict[str, float]]:
    """min / max / mean per attribute of a split, from the per-tune (min, max, sum) summaries."""
    if not summaries or count == 0:
        return {}
    stacked = np.stack(summaries).astype(np.float64)  # (tunes, 3, 4)
    low, high, total = stacked[:, 0].min(0), stacked[:, 1].max(0), stacked[:, 2].sum(0)
    return {
        name: {"min": round(float(low[j]), 6), "max": round(float(high[j]), 6), "mean": round(float(total[j] / count), 6)}
        for j, name in enumerate(attributes.ATTRIBUTE_NAMES)
    }


def _write_summary(directory: str, summary: dict) -> None:
    """``summary.json``, then the marker that says prepare wrote it (the sha256 of its bytes)."""
    text = json.dumps(summary, indent=2, sort_keys=False) + "\n"
    with open(os.path.join(directory, SUMMARY_FILE), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(directory, MARKER_FILE), "w", encoding="utf-8") as f:
        json.dump(_marker(hashlib.sha256(text.encode("utf-8")).hexdigest()), f)


def _install(tmp_dir: str, out: str) -> None:
    """Move the finished temp dir onto ``out``; an old prepared dataset there (and only that) is replaced."""
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
    elif os.path.lexists(out):
        _refuse_unless_ours(out, out)  # again: files may have appeared while the corpus was processed
    fileio.swap_dir_into_place(tmp_dir, out)




# ------------------------------------------------------------------ sources


@dataclasses.dataclass
class _Source:
    """One entry of ``--source``: its files, raw tunes and their ids within this source alone."""

    text: str
    label: str
    files: list
    raw_tunes: list
    local_ids: List[str]


def _read_sources(source: str, cache_dir, allow_unverified: bool, midi_options) -> List[_Source]:
    from music_attr_vae.data import sources

    texts = splits.split_sources(source)
    out = []
    for text, label in zip(texts, splits.source_labels(texts)):
        files = sources.resolve_source(text, cache_dir=cache_dir, allow_unverified=allow_unverified)
        raw_tunes = sources.read_raw_tunes(files)
        if midi_options:
            raw_tunes = [dataclasses.replace(r, options=midi_options) if r.kind == "midi" else r for r in raw_tunes]
        out.append(_Source(text, label, files, raw_tunes, tune_ids(raw_tunes)))
    return out


def _assign(corpus: List[_Source], results: List[TuneResult], fractions, seed: int) -> Dict[str, str]:
    """Split each source alone (as a one-source run would), then mark later copies of a tune DUPLICATE_TUNE.

    Returns ``{stored tune id: split}`` of the kept tunes.
    """
    split_of: Dict[str, str] = {}
    per_source = []
    for src, part in _per_source(corpus, results):
        local = assign_splits([lid for lid, r in zip(src.local_ids, part) if r.kept], fractions, seed)
        split_of.update({r.tune_id: local[lid] for lid, r in zip(src.local_ids, part) if r.kept})
        per_source.append(part)
    keep = splits.first_occurrences([[r.digest if r.kept else None for r in part] for part in per_source])
    first_of: Dict[str, str] = {}
    for part, flags in zip(per_source, keep):
        for r, first in zip(part, flags):
            if r.kept and first:
                first_of.setdefault(r.digest, r.tune_id)
            elif r.kept:
                r.skip_reason, r.skip_detail = DUPLICATE_TUNE, f"same notes as {first_of[r.digest]}"
                r.records = None
                del split_of[r.tune_id]
    return split_of


def _per_source(corpus: List[_Source], results: List[TuneResult]):
    """``(source, its results)`` pairs: the results are in source order."""
    start = 0
    for src in corpus:
        yield src, results[start : start + len(src.raw_tunes)]
        start += len(src.raw_tunes)


def _source_counts(corpus: List[_Source], results: List[TuneResult], split_of: Dict[str, str]) -> List[dict]:
    out = []
    for src, part in _per_source(corpus, results):
        per_split = _split_entries(part, split_of, with_records=False)
        skipped = collections.Counter(r.skip_reason for r in part if r.skip_reason)
        out.append({"source": src.text, "label": src.label, "files": len(src.files), "raw_tunes": len(part),
                     "kept_tunes": sum(r.kept for r in part), "skipped": dict(sorted(skipped.items())),
                     "splits": per_split})
    return out


# ------------------------------------------------------------------ prepare


def prepare(
    source: str,
    output_dir: str,
    *,
    max_shift: int = 12,
    seed: int = 0,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    num_shards: Optional[int] = None,
    jobs: Optional[int] = None,
    cache_dir: Optional[str] = None,
    progress: bool = True,
    allow_unverified_download: bool = False,
    melody_track: Optional[str] = None,
    melody_program: Optional[int] = None,
) -> dict:
    """Turn ``source`` (ABC/MIDI file, directory, glob or ``folk_rnn``; several joined by commas) into shards.

    Writes ``{train,validation,test}.tfrecord-NNNNN-of-MMMMM`` and ``summary.json``
    into ``output_dir`` atomically (built in a temp dir beside it, then
    renamed).  If ``source`` is already a prepared directory its summary is
    returned and nothing is written.  ``melody_track`` / ``melody_program``
    choose the melody part of MIDI files (see ``midi_reader``).  The returned dict is the summary plus
    ``data_dir``, the directory that holds the shards.

    ``output_dir`` may be missing, empty, or a dataset this function wrote
    (nothing else in it); anything else is refused with a PrepareError naming
    it.  Leftovers of a killed earlier run are cleaned first.  A folk-rnn
    download whose checksum is not pinned is refused unless
    ``allow_unverified_download`` (see ``sources.fetch_folk_rnn``).
    """
    if source and is_prepared_dir(str(source)):
        summary = read_summary(str(source))
        summary["data_dir"] = os.path.abspath(str(source))
        return summary
    max_shift = _check_int("max_shift", max_shift, 0, CODEC.num_pitches - 1)
    seed = _check_int("seed", seed, 0)
    fractions = check_split_fractions(split_fractions)
    if num_shards is not None:
        num_shards = _check_int("num_shards", num_shards, 1, 10_000)
    if jobs is not None:
        jobs = _check_int("jobs", jobs, 1)
    if melody_program is not None:
        melody_program = _check_int("melody_program", melody_program, 0, 127)
    if melody_track is not None and not (0 < len(str(melody_track)) <= 100):
        raise PrepareError("melody_track", f"must be a track name or part number of 1..100 characters; got {melody_track!r}")
    splits.split_sources(str(source))  # a malformed list fails before the output folder is touched
    out = _check_output_dir(str(output_dir))

    midi_options = tuple((k, v) for k, v in (("melody_program", melody_program), ("melody_track", melody_track))
                         if v is not None)
    corpus = _read_sources(str(source), cache_dir, allow_unverified_download, midi_options)
    several = len(corpus) > 1
    raw_tunes = [r for src in corpus for r in src.raw_tunes]
    ids = [f"{src.label}/{i}" if several else i for src in corpus for i in src.local_ids]
    results = run_pipeline(raw_tunes, ids, max_shift, jobs=jobs, progress=progress)
    split_of = _assign(corpus, results, fractions, seed)
    files = [f for src in corpus for f in src.files]
    summary = _build_and_write(results, split_of, out, files, seed, num_shards, params=dict(
        source=str(source), max_shift=max_shift, seed=seed, split_fractions=list(fractions), num_shards=num_shards,
        **dict(midi_options),
    ), per_source=_source_counts(corpus, results, split_of) if several else None)
    summary["data_dir"] = out
    return summary


def _split_entries(results: List[TuneResult], split_of: Dict[str, str], with_records: bool = True) -> Dict[str, dict]:
    """Per split: kept tunes, measures, examples (and, ``with_records``, the records and attribute summaries)."""
    per_split = {s: {"tunes": 0, "measures": 0, "examples": 0} for s in SPLITS}
    if with_records:
        for entry in per_split.values():
            entry.update(records=[], attrs=[])
    for r in results:
        if r.kept:
            entry = per_split[split_of[r.tune_id]]
            entry["tunes"] += 1
            entry["measures"] += r.n_measures
            entry["examples"] += r.n_examples
            if with_records:
                entry["records"].extend(r.records)
                entry["attrs"].append(r.attribute_summary)
    return per_split


def _drops(results: List[TuneResult]) -> dict:
    tune_drops = collections.Counter(r.skip_reason for r in results if r.skip_reason)
    # A few skipped tunes per reason, with the reader's detail, to make the counts actionable.
    examples: Dict[str, List[str]] = collections.defaultdict(list)
    for r in results:
        if r.skip_reason and len(examples[r.skip_reason]) < _DROP_EXAMPLES:
            examples[r.skip_reason].append(f"{r.tune_id}: {r.skip_detail}" if r.skip_detail else r.tune_id)
    measure_drops: collections.Counter = collections.Counter()
    for r in results:
        measure_drops.update(r.dropped)
    return {"tunes": dict(sorted(tune_drops.items())), "measures": dict(sorted(measure_drops.items())),
            "tune_examples": dict(sorted(examples.items()))}


def _build_and_write(results, split_of, out, files, seed, num_shards, params, per_source=None) -> dict:
    per_split = _split_entries(results, split_of)
    kept = sum(r.kept for r in results)
    try:
        tmp = fileio.make_temp_dir(out)
    except OSError as err:
        raise PrepareError("output_dir", f"cannot create a folder beside {out}: {err.strerror or err}") from None
    try:
        splits_summary = {}
        for split in SPLITS:
            entry = per_split[split]
            shards = writer.write_split(tmp, split, entry["records"], seed, num_shards)
            splits_summary[split] = {
                "tunes": entry["tunes"],
                "measures": entry["measures"],
                "examples": entry["examples"],
                "shards": shards,
                "attributes": _attribute_stats(entry["attrs"], entry["examples"]),
            }
            entry["records"] = None
        summary = {
            "format_version": FORMAT_VERSION,
            "vocabulary": CODEC.to_json(),
            "attribute_names": list(attributes.ATTRIBUTE_NAMES),
            "features": describe_features(),
            "parameters": params,
            "sources": [{"path": f.path, "kind": f.kind, "sha256": f.sha256} for f in files],
            "splits": splits_summary,
            "totals": {
                "raw_tunes": len(results),
                "kept_tunes": kept,
                "skipped_tunes": len(results) - kept,
                "measures": sum(s["measures"] for s in splits_summary.values()),
                "examples": sum(s["examples"] for s in splits_summary.values()),
            },
            "dropped": _drops(results),
        }
        if per_source is not None:
            summary["per_source"] = per_source
        midi_reports = [(r.tune_id, r.reader_report) for r in results if r.reader_report]
        if midi_reports:
            from music_attr_vae.data import midi_reader

            summary["midi"] = midi_reader.summarize(midi_reports)
        _write_summary(tmp, summary)
        _install(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PrepareError("output_dir", f"cannot write the dataset into {out}: {err.strerror or err}"
                           f"{' (the disk is full)' if err.errno in (errno.ENOSPC, errno.EDQUOT) else ''}; "
                           "nothing was changed there") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def format_counts(summary: dict) -> str:
    """Human-readable counts of a summary: kept tunes/measures/examples per split, drops by reason."""
    lines = [f"{'split':<11}{'tunes':>8}{'measures':>10}{'examples':>10}"]
    for split in SPLITS:
        s = summary["splits"][split]
        lines.append(f"{split:<11}{s['tunes']:>8}{s['measures']:>10}{s['examples']:>10}")
    totals = summary["totals"]
    lines.append(f"{'total':<11}{totals['kept_tunes']:>8}{totals['measures']:>10}{totals['examples']:>10}")
    lines.append(f"raw tunes read: {totals['raw_tunes']}, skipped: {totals['skipped_tunes']}")
    for entry in summary.get("per_source") or []:
        counts = " / ".join(str(entry["splits"][s]["tunes"]) for s in SPLITS)
        lines.append(f"source {entry['label']}: {entry['raw_tunes']} read, {entry['kept_tunes']} kept "
                     f"(train/validation/test tunes {counts}), skipped "
                     + (", ".join(f"{k}={v}" for k, v in entry["skipped"].items()) or "none"))
    for level in ("tunes", "measures"):
        drops = summary["dropped"][level]
        text = ", ".join(f"{k}={v}" for k, v in drops.items()) or "none"
        lines.append(f"dropped {level}: {text}")
    return "\n".join(lines)
