"""The work queue's contract, checked without a cluster."""

import asyncio

import pytest

from kokpit.runtime.queue import DelayHeap, RateLimit, ShutDown, WorkQueue


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
    assert heap.pop_ready(3.5) == ["a"]
    assert heap.pop_ready(4.5) == ["b"]
    assert heap.pop_ready(100) == [], "the superseded entry for a at 5.0 is not served"
    assert len(heap) == 0
