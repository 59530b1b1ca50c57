"""The hand-over between the poll thread and the inference worker: a dynamic batcher.

The poll thread `put`s one `Item` per consumed record, in offset order, and never blocks:
when `full` it pauses the consumer (backpressure) and keeps polling, so the queue holds at
most `capacity` records plus one poll's worth, and `max.poll.interval.ms` is never at risk.

The worker calls `take`, which forms a batch the way NVIDIA Triton's dynamic batcher does:

- as soon as `max_size` items are queued, take `max_size`;
- else, if preferred sizes are set and the largest one that fits is queued, take it now;
- else wait until the oldest item has waited `max_wait_s`, then take what is there;
- a control marker (`Marker`) in the queue flushes every item before it at once (no
  waiting) and is then returned on its own, in order: that is how a rebalance drains the
  work of revoked partitions and how shutdown drains everything;
- `close()` flushes too; `take` returns None once the queue is closed and empty.

Items keep their queue order (which is offset order per partition), so the worker sees each
partition's records in order: the commit watermark (shared.song_tracker) relies on it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Sequence

from shared.schemas import Features


@dataclass
class Item:
    """One consumed record. `features` is None for a record that holds no chunk (it was
    dead-lettered by the poll thread): the worker only moves the watermark past it."""

    partition: Hashable
    offset: int
    features: Features | None
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class Marker:
    """A control message to the worker, processed after every item queued before it."""

    kind: str  # "revoke" or "barrier"
    partitions: frozenset = frozenset()
    seq: int = 0


def parse_sizes(text: str, max_size: int) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64): sorted, deduplicated, each in 1..max_size."""
    sizes = set()
    for part in str(text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        n = int(part)
        if not 1 <= n <= max_size:
            raise ValueError(f"preferred batch size {n} must be between 1 and the maximum batch size {max_size}")
        sizes.add(n)
    return tuple(sorted(sizes))


class WorkQueue:
    """Bounded (by the caller's backpressure) FIFO of items and markers with dynamic batching."""

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._clock = clock
        self._q: deque[Item | Marker] = deque()
        self._items = 0  # Items (not markers) in _q
        self._cond = threading.Condition()
        self._closed = False

    # -- poll thread ------------------------------------------------------------------
    def put(self, item: Item) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("queue closed")
            self._q.append(item)
            self._items += 1
            self._cond.notify_all()

    def put_many(self, items: Iterable[Item]) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("queue closed")
            for item in items:
                self._q.append(item)
                self._items += 1
            self._cond.notify_all()

    def put_marker(self, marker: Marker) -> None:
        """Markers bypass the capacity: they must always get through."""
        with self._cond:
            self._q.append(marker)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return self._items

    @property
    def full(self) -> bool:
        return len(self) >= self.capacity

    def room(self) -> int:
        return max(0, self.capacity - len(self))

    def oldest_wait(self) -> float:
        """Seconds the oldest queued item has waited (0 when none)."""
        with self._cond:
            for x in self._q:
                if isinstance(x, Item):
                    return max(0.0, self._clock() - x.arrived)
        return 0.0

    def drop(self, predicate: Callable[[Item], bool] = lambda _i: True) -> int:
        """Remove queued items matching `predicate` (markers stay); returns how many."""
        with self._cond:
            kept: deque[Item | Marker] = deque()
            dropped = 0
            for x in self._q:
                if isinstance(x, Item) and predicate(x):
                    dropped += 1
                else:
                    kept.append(x)
            self._q = kept
            self._items -= dropped
            self._cond.notify_all()
            return dropped

    def close(self) -> None:
        """No more puts; the worker drains what is queued without waiting, then gets None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- worker thread ----------------------------------------------------------------
    def take(self, max_size: int, max_wait_s: float, preferred: Sequence[int] = (),
             idle_timeout_s: float | None = None) -> list[Item] | Marker | None:
        """The next batch (a non-empty list of items), or the next marker, or None when the
        queue is closed and empty. With `idle_timeout_s`, returns [] when nothing arrived
        within it (so the caller can do housekeeping)."""
        max_size = max(1, int(max_size))
        idle_deadline = None if idle_timeout_s is None else self._clock() + idle_timeout_s
        with self._cond:
            while True:
                if self._q and isinstance(self._q[0], Marker):
                    return self._q.popleft()
                if not self._q:
                    if self._closed:
                        return None
                    if idle_deadline is not None:
                        left = idle_deadline - self._clock()
                        if left <= 0:
                            return []
                        self._cond.wait(left)
                    else:
                        self._cond.wait()
                    continue
                ready, flush = self._ready_count(max_size)
                if flush or ready >= max_size:
                    return self._pop(min(ready, max_size))
                head = self._q[0]
                assert isinstance(head, Item)
                left = head.arrived + max_wait_s - self._clock()
                if left <= 0:
                    return self._pop(ready)
                fitting = [p for p in preferred if p <= ready]
                if fitting:
                    return self._pop(max(fitting))
                self._cond.wait(left)

    def full_batch_ready(self, max_size: int) -> bool:
        """Whether max_size items wait before any marker: the worker's cue to take the next
        batch while the previous one is still being predicted."""
        with self._cond:
            n = 0
            for x in self._q:
                if isinstance(x, Marker):
                    return False
                n += 1
                if n >= max(1, int(max_size)):
                    return True
            return False

    def _ready_count(self, max_size: int) -> tuple[int, bool]:
        """(items before the first marker, capped at max_size; whether to flush now)."""
        n = 0
        for x in self._q:
            if isinstance(x, Marker):
                return n, True
            n += 1
            if n >= max_size:
                return n, True
        return n, self._closed

    def _pop(self, n: int) -> list[Item]:
        out: list[Item] = []
        while len(out) < n and self._q and isinstance(self._q[0], Item):
            out.append(self._q.popleft())  # type: ignore[arg-type]
        self._items -= len(out)
        self._cond.notify_all()
        return out
