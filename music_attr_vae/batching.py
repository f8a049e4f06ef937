"""Consecutive slices of a sequence: the one batching helper of the package.

A leaf module (no imports from the package), so ``data/`` (chunks of tunes for
the prepare workers), ``evaluation/`` and the serving code (model calls on
batches of measures) can all use it without importing each other.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Sequence, TypeVar

T = TypeVar("T")


def batch_slices(n: int, batch_size: int) -> List[slice]:
    """``slice(0, b), slice(b, 2b), ...`` covering ``range(n)``; the last one may be shorter."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, int(batch_size))]


def batches(items: Sequence[T], batch_size: int) -> Iterator[Sequence[T]]:
    """Consecutive batches of ``items`` (lists, arrays, ...), each of at most ``batch_size``."""
    for part in batch_slices(len(items), batch_size):
        yield items[part]


def split_evenly(items: Sequence[T], n_parts: int) -> List[Sequence[T]]:
    """At most ``n_parts`` consecutive batches of equal size (the last may be shorter)."""
    return list(batches(items, max(1, math.ceil(len(items) / max(int(n_parts), 1)))))
