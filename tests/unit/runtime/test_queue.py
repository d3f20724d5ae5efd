"""The work queue's contract, checked without a cluster."""

import asyncio

import pytest

from kokpit.runtime.queue import DelayHeap, Priority, RateLimit, ShutDown, WorkQueue


async def drain(q: WorkQueue[str]) -> list[str]:
    out = []
    while len(q):
        key = await q.get()
        out.append(key)
        q.done(key)
    return out


async def test_adds_are_deduplicated_and_fifo() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    for key in ["a", "b", "a", "c", "b"]:
        q.add(key)
    assert await drain(q) == ["a", "b", "c"]


async def test_a_key_goes_to_one_worker_at_a_time() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    key = await q.get()
    q.add("a")  # changed again while being processed
    assert len(q) == 0, "not handed to a second worker while the first has it"
    q.add("a")
    q.done(key)
    assert len(q) == 1, "queued again, once, when the first worker is done"
    assert await drain(q) == ["a"]


async def test_workers_block_until_a_key_arrives() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_delayed_adds_come_out_in_time_order() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("late", 0.15)
    q.add_after("soon", 0.05)
    q.add_after("late", 0.10)  # earlier time wins
    assert len(q) == 0
    first = await asyncio.wait_for(q.get(), 1)
    q.done(first)
    second = await asyncio.wait_for(q.get(), 1)
    assert [first, second] == ["soon", "late"]
    assert q.waiting == 0


async def test_rate_limited_adds_back_off_per_key() -> None:
    q: WorkQueue[str] = WorkQueue("t", rate_limit=RateLimit(base_delay=0.02, max_delay=1))
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(3):
        start = loop.time()
        q.add_rate_limited("k")
        key = await asyncio.wait_for(q.get(), 2)
        delays.append(loop.time() - start)
        q.done(key)
    assert q.failures("k") == 3
    assert delays[0] >= 0.02
    assert delays[2] >= 0.08, f"doubles each failure: {delays}"
    q.forget("k")
    assert q.failures("k") == 0


async def test_shutdown_stops_getters_and_waits_for_in_flight_work() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("busy")
    key = await q.get()
    idle_getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)

    async def finish_later() -> None:
        await asyncio.sleep(0.05)
        q.done(key)

    finisher = asyncio.create_task(finish_later())
    await q.shutdown(drain_timeout=2)
    assert finisher.done(), "shutdown returned only after in-flight work finished"
    with pytest.raises(ShutDown):
        await idle_getter
    q.add("ignored")
    assert len(q) == 0


def test_delay_heap_keeps_the_earliest_time() -> None:
    heap: DelayHeap[str] = DelayHeap()
    assert heap.push("a", 5.0)
    assert not heap.push("a", 7.0)
    assert heap.push("a", 3.0)
    assert heap.push("b", 4.0)
    assert heap.next_time() == 3.0
    assert heap.pop_ready(3.5) == [("a", Priority.ROUTINE)]
    assert heap.pop_ready(4.5) == [("b", Priority.ROUTINE)]
    assert heap.pop_ready(100) == [], "the superseded entry for a at 5.0 is not served"
    assert len(heap) == 0


# -- priorities: a change someone made is not queued behind routine work --------------------


async def test_changes_come_out_before_new_objects_and_new_before_routine_keys() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("requeued-1", 0)  # a requeue is routine
    q.add("listed", Priority.ROUTINE)
    q.add("created", Priority.NEW)
    q.add_after("requeued-2", 0)
    q.add("changed", Priority.CHANGE)
    q.add("changed-2")  # the default: someone changed it
    assert await drain(q) == [
        *("changed", "changed-2", "created"),
        *("requeued-1", "listed", "requeued-2"),
    ]


async def test_a_queued_routine_key_that_changes_moves_ahead_once() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    for key in ["r1", "r2", "r3"]:
        q.add(key, Priority.ROUTINE)
    q.add("c1")
    q.add("r3")  # an event for a key that was only requeued: promoted behind c1
    assert len(q) == 4, "still queued once"
    assert await drain(q) == ["c1", "r3", "r1", "r2"]
    assert len(q) == 0


async def test_a_lower_priority_add_does_not_demote_a_queued_key() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    q.add("b")
    q.add("a", Priority.ROUTINE)
    q.add("n", Priority.NEW)
    assert await drain(q) == ["a", "b", "n"]


async def test_a_change_while_processing_is_queued_at_its_priority_when_done() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a", Priority.ROUTINE)
    key, priority = await q.get_with_priority()
    assert (key, priority) == ("a", Priority.ROUTINE)
    q.add("r", Priority.ROUTINE)
    q.add("a")  # changed while a worker has it
    assert len(q) == 1, "not handed to a second worker meanwhile"
    q.done("a")
    assert [await q.get_with_priority() for _ in range(2)] == [
        ("a", Priority.CHANGE),
        ("r", Priority.ROUTINE),
    ]


async def test_a_delayed_key_that_becomes_due_is_routine() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("requeued", 0.01)
    await asyncio.sleep(0.1)  # due: the waiting task has queued it
    assert len(q) == 1
    q.add("changed")
    assert await drain(q) == ["changed", "requeued"]


async def test_a_delayed_key_that_changes_meanwhile_comes_out_now() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("k", 0.05)
    q.add("k")
    assert await asyncio.wait_for(q.get_with_priority(), 1) == ("k", Priority.CHANGE)
    q.done("k")
    # The requeue it asked for still comes, once (waited for: on a loaded machine the delay
    # task may run late).
    assert await asyncio.wait_for(q.get(), 2) == "k"
    q.done("k")
    await asyncio.sleep(0.1)
    assert await drain(q) == []


async def test_a_failed_changes_retry_keeps_its_priority() -> None:
    q: WorkQueue[str] = WorkQueue("t", rate_limit=RateLimit(base_delay=0.02, max_delay=1))
    q.add_rate_limited("failed-change", Priority.CHANGE)
    q.add_rate_limited("failed-requeue")
    q.add("backlog", Priority.NEW)
    await asyncio.sleep(0.1)  # both backoffs have passed
    assert await drain(q) == ["failed-change", "backlog", "failed-requeue"]


async def test_delay_heap_keeps_the_higher_priority() -> None:
    heap: DelayHeap[str] = DelayHeap()
    heap.push("a", 5.0, Priority.CHANGE)
    heap.push("a", 3.0)
    heap.push("b", 4.0, Priority.NEW)
    heap.push("b", 6.0, Priority.CHANGE)
    assert heap.pop_ready(10) == [("a", Priority.CHANGE), ("b", Priority.CHANGE)]


async def test_many_promotions_leave_no_key_behind() -> None:
    """Stale entries of promoted keys are skipped, never served, and the depth is right."""
    q: WorkQueue[int] = WorkQueue("t")
    for i in range(100):
        q.add(i, Priority.ROUTINE)
    for i in range(0, 100, 2):
        q.add(i, Priority.NEW)
    for i in range(0, 100, 4):
        q.add(i, Priority.CHANGE)
    assert len(q) == 100
    out = []
    while len(q):
        key = await q.get()
        out.append(key)
        q.done(key)
    assert out == [*range(0, 100, 4), *(i for i in range(0, 100, 2) if i % 4), *range(1, 100, 2)]
