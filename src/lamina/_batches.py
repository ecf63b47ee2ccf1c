"""Group commit's intake: one writer thread takes whatever piled up while it was busy."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")


def batches(waiting: queue.SimpleQueue[T | None], limit: int | None = None) -> Iterator[list[T]]:
    """Batches of what `waiting` holds: block for the first item, then take whatever else is
    already there (up to `limit`), so work that arrived during the last write shares the next
    one. `None` in the queue ends it, after the batch taken before it."""
    while True:
        first = waiting.get()
        if first is None:
            return
        batch = [first]
        while limit is None or len(batch) < limit:
            try:
                item = waiting.get_nowait()
            except queue.Empty:
                break
            if item is None:
                yield batch
                return
            batch.append(item)
        yield batch
