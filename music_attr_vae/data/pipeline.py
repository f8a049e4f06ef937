"""Raw tunes -> measures, one tune at a time, in worker processes when it pays off.

Per tune::

    RawTune --sources.raw_tune_to_sequence--> NoteSequence
            --CODEC.to_grids-->   (M, 24) raw-MIDI grids
            --allowed transpositions-->        (M, 24) tokens in the lowest allowed key,
                                               (M, 4) attributes, the shift range
            --writer.serialize_measures, TFRecord framing--> one record per measure

Only the range of allowed shifts is kept, not a copy of every transposed
measure (see :mod:`.schema`); :meth:`TuneMeasures.expand` enumerates them in
NumPy, as the ``tf.data`` loader does, for the tests and the tools that want them.

**Determinism.**  Results keep the input order, whatever ``jobs`` is.  When
TF is loaded the workers come from a forkserver, and as with any non-fork pool
a script must then call ``prepare`` under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import multiprocessing
import os
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from music_attr_vae import batching, fileio
from music_attr_vae.data import attributes, writer
from music_attr_vae.data.codec import CODEC

# Tune-level reason for a tune that parsed but kept no measure.
NO_MEASURES = "no_usable_measures"
# Measure-level reason for measures whose notes leave MIN..MAX_PITCH.
PITCH_OUT_OF_RANGE = "pitch_out_of_range"

# Below this many tunes (~3 ms each) starting worker processes is not worth it.
_MIN_TUNES_FOR_POOL = 200


@dataclasses.dataclass
class TuneExamples:
    """Every (measure, transposition) example of a tune, ordered by measure then transposition."""

    tokens: np.ndarray  # (N, 24) int32
    attributes: np.ndarray  # (N, 4) float32, ATTRIBUTE_NAMES order
    measure_index: np.ndarray  # (N,) int64
    transposition: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclasses.dataclass
class TuneMeasures:
    """The kept measures of a tune, once each: tokens in the lowest allowed key, and the allowed shifts."""

    tokens: np.ndarray  # (M, 24) int32, transposed by shifts[0]
    attributes: np.ndarray  # (M, 4) float32; the same in every key
    measure_index: np.ndarray  # (M,) int64
    shifts: Tuple[int, ...]  # consecutive: shifts[0], shifts[0] + 1, ...

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def expand(self) -> TuneExamples:
        """Every allowed transposition of every measure (ordered by measure, then shift)."""
        n_shifts, n_measures = len(self.shifts), len(self)
        offsets = np.arange(n_shifts, dtype=np.int32)
        tokens = np.repeat(self.tokens.astype(np.int32), n_shifts, axis=0)
        pitch = tokens < CODEC.num_pitches
        tokens = np.where(pitch, tokens + np.tile(offsets, n_measures)[:, None], tokens)
        return TuneExamples(
            tokens=tokens.reshape(-1, CODEC.ticks_per_measure),
            attributes=np.repeat(self.attributes, n_shifts, axis=0),
            measure_index=np.repeat(np.asarray(self.measure_index, np.int64), n_shifts),
            transposition=np.tile(np.asarray(self.shifts, np.int64), n_measures),
        )


@dataclasses.dataclass
class TuneResult:
    """What the pipeline made of one raw tune.

    ``skip_reason`` is set when the reader rejected the tune, or when it kept no
    measure (``no_usable_measures``); ``dropped`` counts the measures dropped by
    reason either way.  ``n_examples`` = measures x shifts.  ``digest``
    identifies the tune's note content up to transposition (duplicate
    detection across sources).  When :func:`process_chunk` serialises the
    measures, ``records`` holds their framed TFRecords, ``attribute_summary``
    the per-attribute (min, max, sum over the *examples*) and ``measures`` is
    dropped, so workers send back only what the writer needs.
    """

    tune_id: str
    skip_reason: Optional[str] = None
    skip_detail: str = ""
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    n_measures: int = 0
    shifts: Tuple[int, ...] = ()
    n_examples: int = 0
    measures: Optional[TuneMeasures] = None
    records: Optional[List[bytes]] = None
    attribute_summary: Optional[np.ndarray] = None  # (3, 4): min, max, sum over the examples
    reader_report: Optional[dict] = None  # the MIDI reader's decisions (midi_reader.read_report)
    digest: Optional[str] = None

    @property
    def kept(self) -> bool:
        return self.skip_reason is None and self.n_examples > 0

    @property
    def examples(self) -> Optional[TuneExamples]:
        """Every (measure, shift) example, expanded on demand (None once serialised)."""
        return None if self.measures is None else self.measures.expand()


def select_measures(grids: np.ndarray, measure_indices: np.ndarray, max_shift: int):
    """Choose the transpositions of a tune, dropping out-of-range measures only if needed.

    Every shift in [-max_shift, max_shift] that keeps the *whole* tune inside
    the vocabulary is used (a run of consecutive shifts).  When no shift fits
    the whole tune, the measures that are themselves outside MIN..MAX_PITCH are
    dropped and the shifts valid for the rest are used (always including 0).
    Returns ``(grids, measure_indices, shifts, n_out_of_range)``.
    """
    shifts = CODEC.valid_shifts(grids, max_shift)
    if shifts or len(grids) == 0:
        return grids, measure_indices, shifts, 0
    onset = grids >= 0
    out = onset & ((grids < CODEC.min_pitch) | (grids > CODEC.max_pitch))
    keep = ~out.any(axis=1)
    grids, measure_indices = grids[keep], measure_indices[keep]
    return grids, measure_indices, CODEC.valid_shifts(grids, max_shift), int((~keep).sum())


def tune_measures(grids: np.ndarray, measure_indices: np.ndarray, shifts: Sequence[int]) -> TuneMeasures:
    """Tokens (in the key ``shifts[0]``) and attributes of each kept measure, with its shifts."""
    if len(grids) == 0 or not shifts:
        return TuneMeasures(np.zeros((0, CODEC.ticks_per_measure), np.int32),
                            np.zeros((0, len(attributes.ATTRIBUTE_NAMES)), np.float32), np.zeros((0,), np.int64), ())
    shifts = tuple(int(s) for s in shifts)
    if shifts != tuple(range(shifts[0], shifts[0] + len(shifts))):
        raise ValueError(f"allowed shifts must be consecutive; got {shifts}")
    tokens = CODEC.grids_to_tokens(grids, shifts[0]).astype(np.int32)
    return TuneMeasures(tokens, attributes.compute_all(tokens).astype(np.float32),
                        np.asarray(measure_indices, np.int64), shifts)


def tune_digest(grids: np.ndarray) -> str:
    """sha256 of a tune's kept measures with pitches relative to its lowest note (transposition free)."""
    grids = np.asarray(grids, np.int16)
    onset = grids >= 0
    low = grids[onset].min() if onset.any() else 0
    relative = np.where(onset, grids - low, grids).astype("<i2")
    return hashlib.sha256(relative.tobytes()).hexdigest()


def sequence_result(sequence, tune_id: str, max_shift: int) -> TuneResult:
    """Measures, transpositions and examples of one parsed tune."""
    grid_result = CODEC.to_grids(sequence)
    dropped = collections.Counter(grid_result.dropped)
    grids, indices, shifts, n_out = select_measures(grid_result.grids, grid_result.measure_indices, max_shift)
    if n_out:
        dropped[PITCH_OUT_OF_RANGE] += n_out
    result = TuneResult(tune_id=tune_id, dropped=dropped, n_measures=len(grids), shifts=tuple(shifts))
    if len(grids) == 0:
        result.skip_reason = NO_MEASURES
        return result
    result.measures = tune_measures(grids, indices, shifts)
    result.n_examples = len(result.measures) * len(shifts)
    result.digest = tune_digest(grids)
    return result


def process_raw_tune(raw, tune_id: str, max_shift: int) -> TuneResult:
    """Parse one raw tune (reader skips become ``skip_reason``) and make its measures."""
    from music_attr_vae.data import abc_reader, midi_reader, sources

    try:
        sequence = sources.raw_tune_to_sequence(raw)
    except abc_reader.SkipTune as skip:
        return TuneResult(tune_id=tune_id, skip_reason=skip.reason, skip_detail=str(getattr(skip, "detail", "")))
    result = sequence_result(sequence, tune_id, max_shift)
    result.reader_report = midi_reader.read_report(sequence)
    return result


def process_chunk(chunk: Sequence[Tuple[object, str]], max_shift: int, serialize: bool = True) -> List[TuneResult]:
    """Worker entry point: process ``(raw_tune, tune_id)`` pairs, optionally framing their records.

    Framing a whole chunk at once lets the CRC32C run over many records per NumPy call.
    """
    results = [process_raw_tune(raw, tune_id, max_shift) for raw, tune_id in chunk]
    if serialize:
        payloads: List[bytes] = []
        owners: List[int] = []
        for i, res in enumerate(results):
            if res.kept:
                m = res.measures
                payloads.extend(writer.serialize_measures(res.tune_id, m.tokens, m.attributes, m.measure_index,
                                                          m.shifts[0], len(m.shifts)))
                owners.append(i)
        framed = writer.frame_records(payloads)
        start = 0
        for i in owners:
            res = results[i]
            values, n_shifts = res.measures.attributes, len(res.shifts)
            res.records = framed[start : start + res.n_measures]
            res.attribute_summary = np.stack([values.min(0), values.max(0),
                                              values.sum(0, dtype=np.float64) * n_shifts])
            res.measures = None
            start += res.n_measures
    return results


# ------------------------------------------------------------------ running the pipeline


# Imported once by the forkserver, so forked workers start with them loaded.
WORKER_MODULES = ("music_attr_vae.data.pipeline", "music_attr_vae.data.sources")
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
            chunks = batching.split_evenly(pairs, jobs * 8)
            by_chunk: Dict[int, List[TuneResult]] = {}
            for index, chunk_results in _run_in_pool(chunks, max_shift, serialize, jobs):
                by_chunk[index] = chunk_results
                bar = bar or tqdm(total=len(pairs), desc=desc, unit="tune", file=sys.stderr, disable=not progress,
                                  leave=False)
                bar.update(len(chunk_results))
            return [r for index in range(len(chunks)) for r in by_chunk[index]]
        bar = tqdm(total=len(pairs), desc=desc, unit="tune", file=sys.stderr, disable=not progress, leave=False)
        results: List[TuneResult] = []
        for chunk in batching.split_evenly(pairs, max(1, len(pairs) // 32)):
            results.extend(process_chunk(chunk, max_shift, serialize))
            bar.update(len(chunk))
        return results
    finally:
        if bar is not None:
            bar.close()
