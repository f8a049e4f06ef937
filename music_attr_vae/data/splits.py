"""Tune ids, the train/validation/test assignment, several sources at once, duplicate tunes.

**Splits are by tune** (every measure and transposition of a tune lands in one
split): the kept tunes of a source are sorted on ``sha256(seed, tune_id)`` and
the sorted list is cut at exact counts (:func:`split_counts`), so the
assignment depends neither on the order of the files nor on Python's
randomised ``hash``.

**Several sources** (``--source=A,B``): each source's tunes get the ids and
the split they would get if that source were prepared alone, so adding a
corpus never moves a tune of another to a different split.  Stored ids are
prefixed with the source's label (``<label>/<id>``) only when there are
several sources; with one source, ids and splits are exactly those of a
single-source run.

**The same tune in two sources** is a tune whose kept measures, in order, are
equal note for note up to one transposition of the whole tune
(:func:`music_attr_vae.data.pipeline.tune_digest`).  It is kept in the first
source that holds it and counted as :data:`DUPLICATE_TUNE` in the others.
Duplicates inside one source are kept, as a single-source run keeps them.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from music_attr_vae.data.schema import DEFAULT_SPLIT_FRACTIONS, SPLITS, PrepareError

# Tune-level skip reason of a tune already kept from an earlier source.
DUPLICATE_TUNE = "duplicate_tune"
# No more sources than this in one --source value.
MAX_SOURCES = 32


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


# ------------------------------------------------------------------ several sources


def split_sources(source: str) -> List[str]:
    """``"A,B"`` -> ``["A", "B"]``; one existing path (even with a comma in its name) stays one source.

    Raises PrepareError('source') for an empty entry, a source listed twice or more than MAX_SOURCES.
    """
    text = str(source)
    if os.path.exists(text) or "," not in text:
        return [text]
    parts = [p.strip() for p in text.split(",")]
    if any(not p for p in parts):
        raise PrepareError("source", f"{text!r} has an empty entry; separate sources with single commas")
    if len(parts) > MAX_SOURCES:
        raise PrepareError("source", f"{text!r} lists {len(parts)} sources; at most {MAX_SOURCES} are allowed")
    seen = set()
    for p in parts:
        key = os.path.abspath(p) if os.path.exists(p) else p
        if key in seen:
            raise PrepareError("source", f"{p!r} is listed twice in {text!r}")
        seen.add(key)
    return parts


def source_name(source: str, default: str = "source") -> str:
    """A file-name-safe base name of one source: its last path part; a glob's is its folder's (``tunes/*.abc`` -> tunes)."""
    parts = [p for p in re.split(r"[\\/]+", str(source)) if p]
    plain = parts[:next((i for i, p in enumerate(parts) if re.search(r"[*?\[]", p)), len(parts))]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", (plain or parts or [default])[-1])


def source_labels(sources: Sequence[str]) -> List[str]:
    """A short unique label per source (:func:`source_name`; ``-2``, ``-3``... when two share one)."""
    labels: List[str] = []
    for s in sources:
        base = source_name(s)
        label, n = base, 2
        while label in labels:
            label, n = f"{base}-{n}", n + 1
        labels.append(label)
    return labels


def first_occurrences(digests: Sequence[Sequence[Optional[str]]]) -> List[List[bool]]:
    """Per source, per tune: False when the same digest was kept from an *earlier* source.

    ``digests[k][i]`` is the digest of tune i of source k (None for a skipped
    tune, which is never a duplicate).  Repeats within one source stay True.
    """
    seen: set = set()
    out = []
    for per_source in digests:
        keep = [d is None or d not in seen for d in per_source]
        seen.update(d for d, k in zip(per_source, keep) if d is not None and k)
        out.append(keep)
    return out
