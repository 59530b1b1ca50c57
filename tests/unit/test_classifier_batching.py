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
