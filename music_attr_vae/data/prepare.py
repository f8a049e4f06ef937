"""Raw tunes -> transposed, split TFRecord shards + ``summary.json``.

Pipeline (one tune at a time, so it parallelises over tunes)::

    RawTune --sources.raw_tune_to_sequence--> NoteSequence
            --measures.sequence_to_grids-->   (M, 24) raw-MIDI grids
            --valid transpositions-->          (M * S, 24) tokens + (M * S, 4) attributes
            --hand-encoded tf.train.Example, TFRecord framing--> bytes

The pipeline functions (:func:`run_pipeline`, :func:`process_raw_tune`,
:func:`tune_examples`, :func:`tune_ids`, :func:`assign_splits`) are public
because the TFDS builder in ``datasets/folk_measures`` reuses them instead of
duplicating the logic.

**Why no TensorFlow here.**  Importing TF costs ~5 s, more than the whole
parse of the Nottingham corpus, so this module never imports it: examples are
serialised by hand in the protobuf wire format (byte-identical to
``tf.train.Example.SerializeToString(deterministic=True)``, checked by the
tests) and framed as TFRecords with a NumPy CRC32C that checksums many records
at once.  ``music-attr-vae prepare`` therefore starts fast, and so do the
worker processes (see :func:`_pool_context` for how they stay safe when the
caller has TF loaded); the parent works on chunks of tunes too.  When TF is
loaded the workers come from a forkserver, and as with any non-fork pool a
script must then call :func:`prepare` under ``if __name__ == "__main__":``.

**Determinism.**  Tunes are processed in source order (files sorted by the
reader, tunes in file order), examples are ordered by tune, measure, shift,
and each split is then permuted by a generator seeded from ``seed``: the same
input and parameters give byte-identical shards, whatever ``jobs`` is.
Splits are made by tune (all transpositions of a tune land in one split) by
sorting the kept tunes on ``sha256(seed, tune_id)`` and cutting the sorted list
at the requested fractions, so the assignment does not depend on Python's
randomised ``hash``.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import struct
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from music_attr_vae import fileio
from music_attr_vae.data import attributes, measures

SPLITS = ("train", "validation", "test")
SUMMARY_FILE = "summary.json"
# Written last into every prepared folder: the sha256 of its summary.json.  A folder is
# replaced only when this marker matches and it holds nothing but the files its summary lists.
MARKER_FILE = ".music_attr_vae_prepared"
FORMAT_VERSION = 1
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# Feature keys of every tf.train.Example (besides the attributes, by name).
TOKENS_KEY = "tokens"
TUNE_ID_KEY = "tune_id"
MEASURE_INDEX_KEY = "measure_index"
TRANSPOSITION_KEY = "transposition"

# Tune-level reason for a tune that parsed but kept no measure.
NO_MEASURES = "no_usable_measures"
# Measure-level reason for measures whose notes leave MIN..MAX_PITCH.
PITCH_OUT_OF_RANGE = "pitch_out_of_range"

# Below this many tunes (~3 ms each) starting worker processes is not worth it.
_MIN_TUNES_FOR_POOL = 200
# Default shard size target, in bytes of serialized records.
_TARGET_SHARD_BYTES = 16 * 1024 * 1024
_MAX_DEFAULT_SHARDS = 16
# Skipped tunes listed per reason in summary.json.
_DROP_EXAMPLES = 5


class PrepareError(ValueError):
    """A bad argument of :func:`prepare`; ``param`` names it (the CLI flag has the same name)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def shard_name(split: str, index: int, count: int) -> str:
    """File name of one shard, ``<split>.tfrecord-NNNNN-of-MMMMM``."""
    return f"{split}.tfrecord-{index:05d}-of-{count:05d}"


_SHARD_NAME = re.compile(rf"({'|'.join(SPLITS)})\.tfrecord-\d{{5}}-of-\d{{5}}")


# ------------------------------------------------------------------ per tune


@dataclasses.dataclass
class TuneExamples:
    """All examples of one tune, ordered by measure then transposition."""

    tokens: np.ndarray  # (N, 24) int32
    attributes: np.ndarray  # (N, 4) float32, ATTRIBUTE_NAMES order
    measure_index: np.ndarray  # (N,) int64
    transposition: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclasses.dataclass
class TuneResult:
    """What the pipeline made of one raw tune.

    ``skip_reason`` is set when the reader rejected the tune, or when it kept no
    measure (``no_usable_measures``); ``dropped`` counts the measures dropped by
    reason either way.  When :func:`process_chunk` serialises the examples,
    ``records`` holds their framed TFRecords, ``attribute_summary`` their
    per-attribute (min, max, sum) and ``examples`` is dropped, so workers send
    back only what the writer needs.
    """

    tune_id: str
    skip_reason: Optional[str] = None
    skip_detail: str = ""
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    n_measures: int = 0
    shifts: Tuple[int, ...] = ()
    n_examples: int = 0
    examples: Optional[TuneExamples] = None
    records: Optional[List[bytes]] = None
    attribute_summary: Optional[np.ndarray] = None  # (3, 4): min, max, sum over the examples

    @property
    def kept(self) -> bool:
        return self.skip_reason is None and self.n_examples > 0


def select_measures(grids: np.ndarray, measure_indices: np.ndarray, max_shift: int):
    """Choose the transpositions of a tune, dropping out-of-range measures only if needed.

    Every shift in [-max_shift, max_shift] that keeps the *whole* tune inside
    the vocabulary is used.  When no shift fits the whole tune, the measures
    that are themselves outside MIN..MAX_PITCH are dropped and the shifts valid
    for the rest are used (always including 0).  Returns
    ``(grids, measure_indices, shifts, n_out_of_range)``.
    """
    shifts = measures.valid_shifts(grids, max_shift)
    if shifts or len(grids) == 0:
        return grids, measure_indices, shifts, 0
    onset = grids >= 0
    out = onset & ((grids < measures.MIN_PITCH) | (grids > measures.MAX_PITCH))
    keep = ~out.any(axis=1)
    grids, measure_indices = grids[keep], measure_indices[keep]
    return grids, measure_indices, measures.valid_shifts(grids, max_shift), int((~keep).sum())


def tune_examples(grids: np.ndarray, measure_indices: np.ndarray, shifts: Sequence[int]) -> TuneExamples:
    """Tokens, attributes and labels of every (measure, shift) pair, ordered by measure then shift."""
    n_shifts = len(shifts)
    if len(grids) == 0 or n_shifts == 0:
        return TuneExamples(
            np.zeros((0, measures.TICKS_PER_MEASURE), np.int32),
            np.zeros((0, len(attributes.ATTRIBUTE_NAMES)), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.int64),
        )
    per_shift = np.stack([measures.grids_to_tokens(grids, s) for s in shifts], axis=1)  # (M, S, 24)
    tokens = per_shift.reshape(-1, measures.TICKS_PER_MEASURE).astype(np.int32)
    return TuneExamples(
        tokens=tokens,
        attributes=attributes.compute_all(tokens).astype(np.float32),
        measure_index=np.repeat(np.asarray(measure_indices, np.int64), n_shifts),
        transposition=np.tile(np.asarray(shifts, np.int64), len(grids)),
    )


def sequence_result(sequence, tune_id: str, max_shift: int) -> TuneResult:
    """Measures, transpositions and examples of one parsed tune."""
    grid_result = measures.sequence_to_grids(sequence)
    dropped = collections.Counter(grid_result.dropped)
    grids, indices, shifts, n_out = select_measures(grid_result.grids, grid_result.measure_indices, max_shift)
    if n_out:
        dropped[PITCH_OUT_OF_RANGE] += n_out
    result = TuneResult(tune_id=tune_id, dropped=dropped, n_measures=len(grids), shifts=tuple(shifts))
    if len(grids) == 0:
        result.skip_reason = NO_MEASURES
        return result
    result.examples = tune_examples(grids, indices, shifts)
    result.n_examples = len(result.examples)
    return result


def process_raw_tune(raw, tune_id: str, max_shift: int) -> TuneResult:
    """Parse one raw tune (reader skips become ``skip_reason``) and make its examples."""
    from music_attr_vae.data import abc_reader, sources

    try:
        sequence = sources.raw_tune_to_sequence(raw)
    except abc_reader.SkipTune as skip:
        return TuneResult(tune_id=tune_id, skip_reason=skip.reason, skip_detail=str(getattr(skip, "detail", "")))
    return sequence_result(sequence, tune_id, max_shift)


def process_chunk(chunk: Sequence[Tuple[object, str]], max_shift: int, serialize: bool = True) -> List[TuneResult]:
    """Worker entry point: process ``(raw_tune, tune_id)`` pairs, optionally framing their records.

    Framing a whole chunk at once lets the CRC32C run over many records per
    NumPy call.
    """
    results = [process_raw_tune(raw, tune_id, max_shift) for raw, tune_id in chunk]
    if serialize:
        payloads: List[bytes] = []
        owners: List[int] = []
        for i, res in enumerate(results):
            if res.kept:
                payloads.extend(serialize_examples(res.tune_id, res.examples))
                owners.append(i)
        framed = frame_records(payloads)
        start = 0
        for i in owners:
            res = results[i]
            res.records = framed[start : start + res.n_examples]
            values = res.examples.attributes
            res.attribute_summary = np.stack([values.min(0), values.max(0), values.sum(0, dtype=np.float64)])
            res.examples = None
            start += res.n_examples
    return results


# ------------------------------------------------------------------ tune ids and splits


def tune_ids(raw_tunes: Sequence, root: Optional[str] = None) -> List[str]:
    """Stable, human-readable ids ``<file relative to root>#<index>`` for raw tunes.

    Relative paths keep the ids (and thus the split assignment) independent of
    where the corpus lies on disk.
    """
    origins = [str(getattr(r, "origin", "")) for r in raw_tunes]
    if root is None:
        paths = [os.path.abspath(o) for o in origins if o]
        dirs = {os.path.dirname(p) for p in paths}
        root = os.path.commonpath(sorted(dirs)) if dirs else ""
    ids = []
    for raw, origin in zip(raw_tunes, origins):
        name = origin
        if origin and root:
            rel = os.path.relpath(os.path.abspath(origin), root)
            name = origin if rel.startswith("..") else rel
        ids.append(f"{name}#{getattr(raw, 'index', 0)}")
    return ids


def _split_key(tune_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{tune_id}".encode("utf-8")).digest()


def split_counts(n: int, fractions: Sequence[float]) -> List[int]:
    """Exact tune counts per split (largest remainder); every split with a positive fraction
    gets at least one tune when there are enough tunes."""
    raw = [f * n for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(ids: Iterable[str], fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS, seed: int = 0) -> Dict[str, str]:
    """Map each tune id to a split, deterministically from ``seed`` (see the module docstring)."""
    unique = sorted(set(ids))
    ordered = sorted(unique, key=lambda t: (_split_key(t, seed), t))
    out: Dict[str, str] = {}
    start = 0
    for split, count in zip(SPLITS, split_counts(len(ordered), fractions)):
        for t in ordered[start : start + count]:
            out[t] = split
        start += count
    return out


# ------------------------------------------------------------------ tf.train.Example wire format


def _varint(value: int) -> bytes:
    """Protobuf varint of an int64 (negative numbers take 10 bytes, as in protobuf)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_tag: int, payload: bytes) -> bytes:
    return bytes([field_tag]) + _varint(len(payload)) + payload


def _map_entry(key: str, feature: bytes) -> bytes:
    """One ``Features.feature`` map entry (field 1 of Features)."""
    body = _length_delimited(0x0A, key.encode("utf-8")) + _length_delimited(0x12, feature)
    return _length_delimited(0x0A, body)


def _int64_feature(values: Sequence[int]) -> bytes:
    packed = b"".join(_varint(int(v)) for v in values)
    return _length_delimited(0x1A, _length_delimited(0x0A, packed))


def _float_feature(packed_le_float32: bytes) -> bytes:
    return _length_delimited(0x12, _length_delimited(0x0A, packed_le_float32))


def _bytes_feature(value: bytes) -> bytes:
    return _length_delimited(0x0A, _length_delimited(0x0A, value))


def _constant_prefix(key: str, feature_payload_len: int, make_feature) -> bytes:
    """Bytes of a map entry up to its variable payload (for fixed-size payloads)."""
    entry = _map_entry(key, make_feature(b"\0" * feature_payload_len))
    return entry[: len(entry) - feature_payload_len]


_FLOAT_PREFIX = {name: _constant_prefix(name, 4, _float_feature) for name in attributes.ATTRIBUTE_NAMES}
_TOKENS_PREFIX = _constant_prefix(
    TOKENS_KEY, measures.TICKS_PER_MEASURE, lambda b: _length_delimited(0x1A, _length_delimited(0x0A, b))
)
# Protobuf's deterministic serialisation writes map entries sorted by key.
_KEY_ORDER = sorted([TOKENS_KEY, TUNE_ID_KEY, MEASURE_INDEX_KEY, TRANSPOSITION_KEY, *attributes.ATTRIBUTE_NAMES])


def serialize_examples(tune_id: str, examples: TuneExamples) -> List[bytes]:
    """Serialised ``tf.train.Example`` of every example of a tune.

    The bytes equal ``tf.train.Example(...).SerializeToString(deterministic=True)``;
    tokens (0..31) are one varint byte each, so they are copied straight from
    a uint8 array.
    """
    tokens = np.asarray(examples.tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 128):
        raise ValueError("tokens must lie in 0..127 to be written as one-byte varints")
    n_ticks = measures.TICKS_PER_MEASURE
    n_attrs = len(attributes.ATTRIBUTE_NAMES)
    token_bytes = np.ascontiguousarray(tokens, dtype=np.uint8).tobytes()
    attr_bytes = np.ascontiguousarray(examples.attributes, dtype="<f4").tobytes()
    tune_entry = _map_entry(TUNE_ID_KEY, _bytes_feature(tune_id.encode("utf-8")))
    int_cache: Dict[Tuple[str, int], bytes] = {}

    def int_entry(key: str, value: int) -> bytes:
        entry = int_cache.get((key, value))
        if entry is None:
            entry = int_cache[(key, value)] = _map_entry(key, _int64_feature([value]))
        return entry

    def attr(i: int, name: str) -> bytes:
        at = (i * n_attrs + attributes.ATTRIBUTE_NAMES.index(name)) * 4
        return _FLOAT_PREFIX[name] + attr_bytes[at : at + 4]

    out = []
    for i in range(len(tokens)):
        parts = {
            TOKENS_KEY: _TOKENS_PREFIX + token_bytes[i * n_ticks : (i + 1) * n_ticks],
            TUNE_ID_KEY: tune_entry,
            MEASURE_INDEX_KEY: int_entry(MEASURE_INDEX_KEY, int(examples.measure_index[i])),
            TRANSPOSITION_KEY: int_entry(TRANSPOSITION_KEY, int(examples.transposition[i])),
        }
        for name in attributes.ATTRIBUTE_NAMES:
            parts[name] = attr(i, name)
        body = b"".join([parts[k] for k in _KEY_ORDER])
        out.append(b"\x0a" + _varint(len(body)) + body)
    return out


# ------------------------------------------------------------------ TFRecord framing


def _crc32c_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(records: Sequence[bytes]) -> np.ndarray:
    """CRC32C (Castagnoli) of many byte strings at once, as uint32.

    Records of equal length are checksummed together, one NumPy step per byte
    position, so the Python overhead is per distinct length, not per byte.
    """
    out = np.zeros(len(records), np.uint32)
    if not records:
        return out
    lengths = np.fromiter((len(r) for r in records), np.int64, len(records))
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        crc = np.full(len(idx), 0xFFFFFFFF, np.uint32)
        if length:
            joined = b"".join([records[i] for i in idx])
            columns = np.frombuffer(joined, np.uint8).reshape(len(idx), int(length)).T.copy()
            for column in columns:
                crc = _CRC_TABLE[(crc ^ column) & 0xFF] ^ (crc >> 8)
        out[idx] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def masked_crc32c(records: Sequence[bytes]) -> np.ndarray:
    """The masked CRC that TFRecord stores: rotate right by 15, add 0xa282ead8."""
    crc = crc32c(records).astype(np.uint64)
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    return ((rotated + 0xA282EAD8) & 0xFFFFFFFF).astype(np.uint32)


def frame_records(payloads: Sequence[bytes]) -> List[bytes]:
    """TFRecord framing: length (u64 LE), masked CRC of the length, payload, masked CRC of the payload."""
    if not payloads:
        return []
    headers = [struct.pack("<Q", len(p)) for p in payloads]
    header_crc = masked_crc32c(headers)
    payload_crc = masked_crc32c(payloads)
    return [
        h + struct.pack("<I", int(hc)) + p + struct.pack("<I", int(pc))
        for h, hc, p, pc in zip(headers, header_crc, payloads, payload_crc)
    ]


# ------------------------------------------------------------------ running the pipeline


def _chunks(items: Sequence, n_chunks: int) -> List[Sequence]:
    size = max(1, math.ceil(len(items) / max(n_chunks, 1)))
    return [items[i : i + size] for i in range(0, len(items), size)]


# Imported once by the forkserver, so forked workers start with them loaded.
WORKER_MODULES = ("music_attr_vae.data.prepare", "music_attr_vae.data.sources")
# Libraries whose runtime threads make a plain fork unsafe in the parent.
_FORK_UNSAFE_MODULES = ("tensorflow", "jax", "torch")


def _pool_context():
    """The multiprocessing context of the workers.

    ``fork`` when it is safe (this process runs a single thread and has no
    threaded ML runtime loaded): workers start instantly with everything
    imported.  Otherwise ``forkserver`` (``spawn`` where there is none): fork
    is unsafe once TF has started its threads (``train`` calls prepare in a
    TF process), so a clean server process imports the pipeline modules once
    (~1.5 s, mostly note_seq, never TF) and forks the workers from that state.
    """
    import threading

    methods = multiprocessing.get_all_start_methods()
    loaded = any(name in sys.modules for name in _FORK_UNSAFE_MODULES)
    if "fork" in methods and not loaded and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(WORKER_MODULES))
        return ctx
    return multiprocessing.get_context("spawn")


_PR_SET_PDEATHSIG = 1
_WATCH_PARENT_S = 0.5


def _exit_with_parent(owner_pid: int) -> None:
    """Worker initializer: end this worker when the process that started the pool dies.

    A worker blocked on the task queue never notices a ``kill -9`` of its
    parent (it holds the queue's other end), so on Linux the kernel is asked to
    SIGKILL it when its parent goes (``PR_SET_PDEATHSIG``), and a watchdog
    thread also checks every 0.5 s that ``owner_pid`` still lives (this covers
    forkserver workers, whose parent is the server, and other systems).
    """
    import signal
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while fileio.pid_alive(owner_pid):
            time.sleep(_WATCH_PARENT_S)
        os._exit(1)

    if not fileio.pid_alive(owner_pid):
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_in_pool(chunks: Sequence, max_shift: int, serialize: bool, jobs: int) -> Iterator[Tuple[int, list]]:
    """Yield ``(chunk index, results)`` as chunks finish, in any order.

    The workers take chunks from the front of the list and this process takes
    them from the back while it waits, so a slow pool start-up (forkserver)
    costs no wall time.  A dying worker becomes a clear error instead of a hang.
    """
    from concurrent import futures
    from concurrent.futures.process import BrokenProcessPool

    front, back = 0, len(chunks)  # chunks[front:back] are unclaimed
    in_flight: Dict[futures.Future, int] = {}
    try:
        with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=_pool_context(),
                                         initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            while front < back or in_flight:
                while front < back and len(in_flight) < 2 * jobs:
                    in_flight[pool.submit(process_chunk, chunks[front], max_shift, serialize)] = front
                    front += 1
                done = [f for f in in_flight if f.done()]
                if not done and front < back:
                    back -= 1
                    yield back, process_chunk(chunks[back], max_shift, serialize)
                    continue
                if not done:
                    done, _ = futures.wait(in_flight, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    yield in_flight.pop(future), future.result()
    except BrokenProcessPool as err:
        raise RuntimeError(
            f"a prepare worker process died ({err}). When prepare() runs from a script, call it under "
            "`if __name__ == '__main__':` (worker processes re-import the main module), or pass jobs=1"
        ) from err


def run_pipeline(
    raw_tunes: Sequence,
    ids: Sequence[str],
    max_shift: int,
    *,
    jobs: Optional[int] = None,
    serialize: bool = True,
    progress: bool = True,
    desc: str = "prepare",
) -> List[TuneResult]:
    """Process every raw tune, with worker processes when it pays off; results keep the input order."""
    pairs = list(zip(raw_tunes, ids))
    if jobs is None:
        jobs = os.cpu_count() or 1
        use_pool = jobs > 1 and len(pairs) >= _MIN_TUNES_FOR_POOL
    else:
        use_pool = jobs > 1 and len(pairs) > 1
    from tqdm.auto import tqdm

    # The bar (and its monitor thread) is created once the workers exist, so a fork sees one thread.
    bar = None
    try:
        if use_pool:
            chunks = _chunks(pairs, jobs * 8)
            by_chunk: Dict[int, List[TuneResult]] = {}
            for index, chunk_results in _run_in_pool(chunks, max_shift, serialize, jobs):
                by_chunk[index] = chunk_results
                bar = bar or tqdm(total=len(pairs), desc=desc, unit="tune", file=sys.stderr, disable=not progress,
                                  leave=False)
                bar.update(len(chunk_results))
            return [r for index in range(len(chunks)) for r in by_chunk[index]]
        bar = tqdm(total=len(pairs), desc=desc, unit="tune", file=sys.stderr, disable=not progress, leave=False)
        results: List[TuneResult] = []
        for chunk in _chunks(pairs, max(1, len(pairs) // 32)):
            results.extend(process_chunk(chunk, max_shift, serialize))
            bar.update(len(chunk))
        return results
    finally:
        if bar is not None:
            bar.close()


# ------------------------------------------------------------------ validation


def parse_split_fractions(text: str) -> Tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); raises PrepareError('split', ...) on bad text."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise PrepareError("split", f"{text!r} is not three comma-separated numbers (train,validation,test)") from None
    return check_split_fractions(values)


def check_split_fractions(fractions: Sequence[float]) -> Tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != len(SPLITS):
        raise PrepareError("split", f"needs {len(SPLITS)} fractions (train,validation,test); got {list(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise PrepareError("split", f"fractions must be finite and >= 0; got {list(values)}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise PrepareError("split", f"fractions must sum to 1; got {list(values)} (sum {sum(values):g})")
    if values[0] <= 0:
        raise PrepareError("split", f"the train fraction must be > 0; got {list(values)}")
    return values  # type: ignore[return-value]


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
    (``format_version``, the three splits) and every shard it lists exists.
    """
    try:
        summary = read_summary(path)
        if summary.get("format_version") != FORMAT_VERSION:
            return None
        shards = [name for split in SPLITS for name in summary["splits"][split]["shards"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(isinstance(n, str) and _SHARD_NAME.fullmatch(n) for n in shards):
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


# ------------------------------------------------------------------ summary and writing


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


def _default_num_shards(total_bytes: int) -> int:
    return int(min(_MAX_DEFAULT_SHARDS, max(1, math.ceil(total_bytes / _TARGET_SHARD_BYTES))))


def _write_split(directory: str, split: str, records: List[bytes], seed: int, num_shards: Optional[int]) -> List[str]:
    """Shuffle a split's records with a seeded generator and write them as contiguous shards."""
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    order = rng.permutation(len(records))
    total = sum(len(r) for r in records)
    count = num_shards if num_shards is not None else _default_num_shards(total)
    count = max(1, min(count, len(records))) if records else 1
    names = []
    for index, part in enumerate(np.array_split(order, count)):
        name = shard_name(split, index, count)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"".join([records[i] for i in part]))
        names.append(name)
    return names


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
) -> dict:
    """Turn ``source`` (ABC/MIDI file, directory, glob or ``folk_rnn``) into TFRecord shards.

    Writes ``{train,validation,test}.tfrecord-NNNNN-of-MMMMM`` and ``summary.json``
    into ``output_dir`` atomically (built in a temp dir beside it, then
    renamed).  If ``source`` is already a prepared directory its summary is
    returned and nothing is written.  The returned dict is the summary plus
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
    max_shift = _check_int("max_shift", max_shift, 0, measures.NUM_PITCHES - 1)
    seed = _check_int("seed", seed, 0)
    fractions = check_split_fractions(split_fractions)
    if num_shards is not None:
        num_shards = _check_int("num_shards", num_shards, 1, 10_000)
    if jobs is not None:
        jobs = _check_int("jobs", jobs, 1)
    out = _check_output_dir(str(output_dir))

    from music_attr_vae.data import sources

    files = sources.resolve_source(str(source), cache_dir=cache_dir, allow_unverified=allow_unverified_download)
    raw_tunes = sources.read_raw_tunes(files)
    ids = tune_ids(raw_tunes)
    results = run_pipeline(raw_tunes, ids, max_shift, jobs=jobs, progress=progress)
    summary = _build_and_write(results, out, files, fractions, seed, num_shards, params=dict(
        source=str(source), max_shift=max_shift, seed=seed, split_fractions=list(fractions), num_shards=num_shards,
    ))
    summary["data_dir"] = out
    return summary


def _build_and_write(results, out, files, fractions, seed, num_shards, params) -> dict:
    kept = [r for r in results if r.kept]
    split_of = assign_splits([r.tune_id for r in kept], fractions, seed)
    tune_drops = collections.Counter(r.skip_reason for r in results if r.skip_reason)
    # A few skipped tunes per reason, with the reader's detail, to make the counts actionable.
    tune_drop_examples: Dict[str, List[str]] = collections.defaultdict(list)
    for r in results:
        if r.skip_reason and len(tune_drop_examples[r.skip_reason]) < _DROP_EXAMPLES:
            tune_drop_examples[r.skip_reason].append(f"{r.tune_id}: {r.skip_detail}" if r.skip_detail else r.tune_id)
    measure_drops: collections.Counter = collections.Counter()
    for r in results:
        measure_drops.update(r.dropped)

    per_split = {s: {"tunes": 0, "measures": 0, "examples": 0, "records": [], "attrs": []} for s in SPLITS}
    for r in kept:
        entry = per_split[split_of[r.tune_id]]
        entry["tunes"] += 1
        entry["measures"] += r.n_measures
        entry["examples"] += r.n_examples
        entry["records"].extend(r.records)
        entry["attrs"].append(r.attribute_summary)

    try:
        tmp = fileio.make_temp_dir(out)
    except OSError as err:
        raise PrepareError("output_dir", f"cannot create a folder beside {out}: {err.strerror or err}") from None
    try:
        splits_summary = {}
        for split in SPLITS:
            entry = per_split[split]
            shards = _write_split(tmp, split, entry["records"], seed, num_shards)
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
            "vocabulary": measures.vocabulary(),
            "attribute_names": list(attributes.ATTRIBUTE_NAMES),
            "features": {
                TOKENS_KEY: f"int64[{measures.TICKS_PER_MEASURE}]",
                **{name: "float" for name in attributes.ATTRIBUTE_NAMES},
                TUNE_ID_KEY: "bytes",
                MEASURE_INDEX_KEY: "int64",
                TRANSPOSITION_KEY: "int64",
            },
            "parameters": params,
            "sources": [{"path": f.path, "kind": f.kind, "sha256": f.sha256} for f in files],
            "splits": splits_summary,
            "totals": {
                "raw_tunes": len(results),
                "kept_tunes": len(kept),
                "skipped_tunes": len(results) - len(kept),
                "measures": sum(s["measures"] for s in splits_summary.values()),
                "examples": sum(s["examples"] for s in splits_summary.values()),
            },
            "dropped": {
                "tunes": dict(sorted(tune_drops.items())),
                "measures": dict(sorted(measure_drops.items())),
                "tune_examples": dict(sorted(tune_drop_examples.items())),
            },
        }
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
    for level in ("tunes", "measures"):
        drops = summary["dropped"][level]
        text = ", ".join(f"{k}={v}" for k, v in drops.items()) or "none"
        lines.append(f"dropped {level}: {text}")
    return "\n".join(lines)
