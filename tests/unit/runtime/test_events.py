"""The event recorder writes in the background: recording never waits for the API server, a
full backlog drops (and counts) rather than blocks, and an Event that was not written is
created by its next occurrence. The client is a stand-in that holds writes until released
(the recorder against the API server: tests/e2e/runtime/test_events.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from kokpit.runtime import EventRecorder
from kokpit.runtime import events as events_module
from kokpit.runtime.errors import ServerError
from kokpit.runtime.metrics import EVENTS_DROPPED

Object = dict[str, Any]
REGARDING: Object = {"kind": "Machine", "metadata": {"name": "m1", "namespace": "ns", "uid": "u"}}


class SlowClient:
    """Creates Events only once ``open`` is set; fails them while ``failing``. Records the
    series updates too."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.failing = False
        self.created: list[Object] = []
        self.series: list[int] = []

    async def patch(self, resource: Any, name: str, body: Object, **kw: Any) -> Object:
        self.series.append(body["series"]["count"])
        return body

    async def create(self, resource: Any, body: Object, **kw: Any) -> Object:
        await self.open.wait()
        if self.failing:
            raise ServerError("etcdserver: request timed out")
        self.created.append(body)
        return body


def recorder(client: SlowClient, **kw: Any) -> EventRecorder:
    return EventRecorder(client, "kokpit.io/test", "replica-0", **kw)  # type: ignore[arg-type]


async def test_recording_returns_before_the_write_and_flush_waits_for_it() -> None:
    client = SlowClient()
    events = recorder(client)
    events.event(REGARDING, "Normal", "Cordoned", "node m1 cordoned")  # would hang if awaited
    await asyncio.sleep(0)
    assert client.created == []
    client.open.set()
    await events.flush()
    assert [e["reason"] for e in client.created] == ["Cordoned"]
    await events.close()


async def test_a_full_backlog_drops_new_events_and_counts_them() -> None:
    client = SlowClient()
    events = recorder(client, backlog=2, senders=1)
    dropped = EVENTS_DROPPED.labels("kokpit.io/test")
    before = dropped._value.get()
    for i in range(5):  # one taken by the sender, two waiting, two dropped
        events.event(REGARDING, "Normal", f"Step{i}", "x")
        await asyncio.sleep(0)
    assert dropped._value.get() - before == 2
    client.open.set()
    await events.close()
    assert [e["reason"] for e in client.created] == ["Step0", "Step1", "Step2"]
    events.event(REGARDING, "Normal", "Step3", "x")  # dropped before: created now
    await events.close()
    assert client.created[-1]["reason"] == "Step3"


async def test_an_event_that_failed_to_be_written_is_created_by_its_next_occurrence() -> None:
    client = SlowClient()
    client.open.set()
    client.failing = True
    events = recorder(client)
    events.event(REGARDING, "Warning", "RepairFailed", "reboot: BMC refused")
    await events.flush()
    client.failing = False
    events.event(REGARDING, "Warning", "RepairFailed", "reboot: BMC refused")
    await events.close()
    assert [e["reason"] for e in client.created] == ["RepairFailed"]


def test_a_recorder_that_outlives_its_event_loop_closes_and_records_on_the_next() -> None:
    client = SlowClient()
    events = recorder(client)

    async def first() -> None:  # its senders wait on the client when this loop ends
        events.event(REGARDING, "Normal", "Cordoned", "node m1 cordoned")
        await asyncio.sleep(0)

    async def second() -> None:
        await events.close()  # the senders are the ended loop's: only forgotten
        client.open = asyncio.Event()  # an Event of this loop
        client.open.set()
        events.event(REGARDING, "Normal", "Uncordoned", "node m1 uncordoned")
        await events.close()

    asyncio.run(first())
    asyncio.run(second())
    assert [e["reason"] for e in client.created] == ["Uncordoned"]


async def test_more_distinct_events_than_it_tracks_keep_its_memory_bounded(
    monkeypatch: Any,
) -> None:
    """Notes can carry what nodes report: many distinct Events within the series window must
    not grow the recorder without bound."""
    monkeypatch.setattr(events_module, "MAX_TRACKED", 100)
    client = SlowClient()
    client.open.set()
    events = recorder(client)
    for i in range(1_000):
        events.event(REGARDING, "Warning", "Reported", f"report {i}")
        assert len(events._seen) <= 100
    await events.close()
    assert len(client.created) == 1_000


async def test_a_repeat_before_its_event_is_created_is_counted_and_written_after_it() -> None:
    """With two senders a series update sent beside its create could reach the API server
    first (and fail: not found). Repeats are counted until the create is done."""
    client = SlowClient()
    events = recorder(client, min_update_interval=0)
    events.event(REGARDING, "Warning", "DrainBlocked", "budget web")
    events.event(REGARDING, "Warning", "DrainBlocked", "budget web")
    await asyncio.sleep(0)
    assert client.series == []
    client.open.set()
    await events.flush()
    events.event(REGARDING, "Warning", "DrainBlocked", "budget web")
    await events.close()
    assert [e["reason"] for e in client.created] == ["DrainBlocked"]
    assert client.series == [3]


async def test_writes_left_when_the_grace_ends_are_counted_as_dropped() -> None:
    client = SlowClient()  # never answers
    events = recorder(client, senders=1)
    dropped = EVENTS_DROPPED.labels("kokpit.io/test")
    before = dropped._value.get()
    for i in range(3):  # one taken by the sender, two waiting
        events.event(REGARDING, "Normal", f"Step{i}", "x")
    await asyncio.sleep(0)
    await events.close(grace=0.05)
    assert dropped._value.get() - before == 2
