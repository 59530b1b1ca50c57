"""The classifier's dynamic batcher (services.classifier.batching), with no Kafka and no model."""

from __future__ import annotations

import threading
import time

import pytest

from services.classifier.batching import Item, Marker, WorkQueue, parse_sizes


def item(offset: int, partition: str = "p0", arrived: float | None = None) -> Item:
    return Item(partition, offset, None, time.monotonic() if arrived is None else arrived)


def test_full_batch_is_taken_at_once():
    q = WorkQueue(100)
    q.put_many(item(i) for i in range(10))
    t0 = time.monotonic()
    got = q.take(4, max_wait_s=5.0)
    assert [i.offset for i in got] == [0, 1, 2, 3]
    assert time.monotonic() - t0 < 0.5
    assert len(q) == 6


def test_partial_batch_waits_for_the_oldest_item_max_wait():
    q = WorkQueue(100)
    q.put(item(0))
    t0 = time.monotonic()
    got = q.take(64, max_wait_s=0.15)
    waited = time.monotonic() - t0
    assert [i.offset for i in got] == [0]
    assert 0.12 <= waited < 1.0


def test_wait_counts_from_arrival_not_from_take():
    q = WorkQueue(100)
    q.put(item(0, arrived=time.monotonic() - 10))  # waited long already
    t0 = time.monotonic()
    assert len(q.take(64, max_wait_s=0.5)) == 1
    assert time.monotonic() - t0 < 0.2


def test_items_arriving_during_the_wait_join_the_batch():
    q = WorkQueue(100)
    q.put(item(0))

    def later():
        time.sleep(0.05)
        q.put_many(item(i) for i in range(1, 4))

    threading.Thread(target=later).start()
    got = q.take(4, max_wait_s=2.0)
    assert [i.offset for i in got] == [0, 1, 2, 3]  # filled up: no need to wait the full 2 s


def test_preferred_sizes_are_taken_without_waiting():
    q = WorkQueue(100)
    q.put_many(item(i) for i in range(40))
    t0 = time.monotonic()
    got = q.take(64, max_wait_s=5.0, preferred=(16, 32))
    assert len(got) == 32 and time.monotonic() - t0 < 0.5
    got = q.take(64, max_wait_s=0.05, preferred=(16, 32))
    assert len(got) == 8  # no preferred size fits: waited, then took what was there


def test_parse_sizes():
    assert parse_sizes("", 64) == ()
    assert parse_sizes("64, 16,32,16", 64) == (16, 32, 64)
    with pytest.raises(ValueError):
        parse_sizes("128", 64)


def test_marker_flushes_the_items_before_it_then_comes_alone():
    q = WorkQueue(100)
    q.put_many(item(i) for i in range(3))
    m = Marker("revoke", frozenset({"p0"}), 1)
    q.put_marker(m)
    q.put(item(3))
    t0 = time.monotonic()
    assert [i.offset for i in q.take(64, max_wait_s=5.0)] == [0, 1, 2]
    assert q.take(64, max_wait_s=5.0) is m
    assert time.monotonic() - t0 < 0.5  # no batching wait before a marker
    assert [i.offset for i in q.take(64, max_wait_s=0.01)] == [3]


def test_markers_bypass_capacity_and_do_not_count():
    q = WorkQueue(2)
    q.put_many(item(i) for i in range(2))
    assert q.full and q.room() == 0
    q.put_marker(Marker("barrier"))
    assert len(q) == 2


def test_close_drains_without_waiting_then_returns_none():
    q = WorkQueue(10)
    q.put_many(item(i) for i in range(3))
    q.close()
    t0 = time.monotonic()
    assert len(q.take(64, max_wait_s=5.0)) == 3
    assert q.take(64, max_wait_s=5.0) is None
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(RuntimeError):
        q.put(item(9))


def test_close_wakes_a_waiting_worker():
    q = WorkQueue(10)
    out = []
    t = threading.Thread(target=lambda: out.append(q.take(4, max_wait_s=5.0)))
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(2)
    assert out == [None]


def test_idle_timeout_returns_empty_list():
    q = WorkQueue(10)
    t0 = time.monotonic()
    assert q.take(4, max_wait_s=1.0, idle_timeout_s=0.05) == []
    assert time.monotonic() - t0 < 0.5


def test_drop_removes_items_of_some_partitions_and_keeps_markers():
    q = WorkQueue(10)
    q.put_many([item(0, "a"), item(0, "b"), item(1, "a")])
    m = Marker("revoke", frozenset({"a"}), 1)
    q.put_marker(m)
    assert q.drop(lambda it: it.partition == "a") == 2
    assert len(q) == 1
    assert [(i.partition, i.offset) for i in q.take(4, 5.0)] == [("b", 0)]
    assert q.take(4, 5.0) is m


def test_order_is_preserved_across_batches():
    q = WorkQueue(1000)
    q.put_many(item(i, f"p{i % 3}") for i in range(100))
    q.close()
    seen = []
    while (got := q.take(7, 0.01)) is not None:
        assert 1 <= len(got) <= 7
        seen.extend(got)
    assert [i.offset for i in seen] == list(range(100))


def test_full_batch_ready_counts_items_up_to_the_first_marker():
    q = WorkQueue(100)
    assert not q.full_batch_ready(3)
    q.put_many(item(k) for k in range(2))
    assert not q.full_batch_ready(3)
    q.put_marker(Marker("barrier", seq=1))
    q.put_many(item(k) for k in range(2, 6))
    assert not q.full_batch_ready(3)  # only 2 before the marker, which must come first
    assert [i.offset for i in q.take(3, 0.0)] == [0, 1]
    assert isinstance(q.take(3, 0.0), Marker)
    assert q.full_batch_ready(3) and q.full_batch_ready(4) and not q.full_batch_ready(5)


class ScriptedClock:
    """A clock for the queue: returns `times` in turn (the last one after that); `on_call`
    maps a call number (1-based) to an action run inside that call, under the queue's lock."""

    def __init__(self, times, on_call=None):
        self.times, self.on_call, self.calls = list(times), dict(on_call or {}), 0

    def __call__(self):
        self.calls += 1
        if self.calls in self.on_call:
            self.on_call.pop(self.calls)()
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def test_parse_sizes_takes_semicolons_skips_empty_parts_and_bounds_each_size():
    assert parse_sizes("1;2, ,4,,2", 8) == (1, 2, 4)
    assert parse_sizes(None, 8) == ()
    assert parse_sizes("8", 8) == (8,)
    for bad in ("0", "9"):
        with pytest.raises(ValueError, match=f"preferred batch size {bad} must be between 1 and the maximum batch size 8"):
            parse_sizes(f"2,{bad}", 8)


def test_capacity_is_at_least_one_and_counts_items():
    with pytest.raises(ValueError, match="^capacity must be >= 1$"):
        WorkQueue(0)
    q = WorkQueue(1)
    assert not q.full and q.room() == 1 and not q.closed
    q.put(item(0))
    assert q.full and q.room() == 0 and len(q) == 1
    q.put(item(1))
    q.put_many([item(2), item(3)])  # the poll thread never blocks: its backpressure is pausing
    assert len(q) == 4 and q.room() == 0


def test_puts_after_close_are_refused():
    q = WorkQueue(4)
    q.close()
    for put in (lambda: q.put(item(0)), lambda: q.put_many([item(0)])):
        with pytest.raises(RuntimeError, match="^queue closed$"):
            put()
    assert q.closed and len(q) == 0


def test_oldest_wait_is_the_first_items_age_past_any_marker():
    q = WorkQueue(4, clock=lambda: 12.5)
    assert q.oldest_wait() == 0.0
    q.put_marker(Marker("barrier"))
    assert q.oldest_wait() == 0.0
    q.put(item(0, arrived=10.0))
    q.put(item(1, arrived=12.0))
    assert q.oldest_wait() == 2.5
    q2 = WorkQueue(4, clock=lambda: 12.5)
    q2.put(item(0, arrived=13.0))  # a clock read before the item's: never negative
    assert q2.oldest_wait() == 0.0


def test_a_batch_of_one_or_less_means_one_item():
    q = WorkQueue(10)
    q.put_many(item(i) for i in range(3))
    assert [i.offset for i in q.take(1, max_wait_s=5.0)] == [0]
    assert [i.offset for i in q.take(0, max_wait_s=5.0)] == [1]
    assert q.full_batch_ready(1) and q.full_batch_ready(0)


def test_a_preferred_size_counts_only_the_items_queued():
    q = WorkQueue(10)
    q.put_many(item(i) for i in range(2))
    assert [i.offset for i in q.take(3, max_wait_s=5.0, preferred=(1,))] == [0]


def test_a_preferred_size_equal_to_the_items_queued_is_taken_without_waiting():
    q = WorkQueue(10)
    # were it not taken at once, the queue would wait and find a third item on its next look
    clock = ScriptedClock([0.0, 0.02], on_call={2: lambda: q.put(item(2, arrived=0.0))})
    q._clock = clock
    q.put_many([item(0, arrived=0.0), item(1, arrived=0.0)])
    assert [i.offset for i in q.take(4, max_wait_s=0.01, preferred=(2,))] == [0, 1]
    assert len(q) == 0


def test_an_item_arriving_within_the_idle_timeout_is_returned():
    q = WorkQueue(10)
    # first call: the idle deadline (0.3); second: 0.25 s later an item has arrived
    q._clock = ScriptedClock([0.0, 0.25, 1.0], on_call={2: lambda: q.put(item(0, arrived=-10.0))})
    assert [i.offset for i in q.take(4, max_wait_s=0.5, idle_timeout_s=0.3)] == [0]
