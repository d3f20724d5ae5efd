"""Events are recorded once and then counted, not written on every repeat; they are written in
the background, and what is waiting is written when the recorder closes."""

from __future__ import annotations

from kokpit.runtime import Client, EventRecorder
from kokpit.runtime.resources import CONFIGMAPS, EVENTS


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_repeats_become_a_series_written_at_most_once_per_interval(
    client: Client, namespace: str
) -> None:
    regarding = await client.create(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "subject", "namespace": namespace},
        },
    )
    clock = Clock()
    recorder = EventRecorder(
        client, "kokpit.io/test", "replica-0", min_update_interval=30, clock=clock
    )
    note = "etcd did not become healthy: connection refused"
    recorder.event(regarding, "Warning", "HealthCheckFailed", note)
    clock.now = 1
    recorder.event(regarding, "Warning", "HealthCheckFailed", note)  # counted, not written
    await recorder.flush()
    events = (await client.list(EVENTS, namespace=namespace)).items
    assert len(events) == 1
    assert "series" not in events[0]
    clock.now = 31
    recorder.event(regarding, "Warning", "HealthCheckFailed", note)
    await recorder.flush()
    (event,) = (await client.list(EVENTS, namespace=namespace)).items
    assert event["series"]["count"] == 3
    assert event["regarding"]["uid"] == regarding["metadata"]["uid"]
    assert (event["type"], event["reason"], event["note"]) == ("Warning", "HealthCheckFailed", note)
    assert event["reportingController"] == "kokpit.io/test"

    recorder.event(regarding, "Normal", "Recovered", "healthy again")
    await recorder.close()
    assert len((await client.list(EVENTS, namespace=namespace)).items) == 2
