import inspect
from typing import Any

import kokpit.runtime
from kokpit.runtime.client import RecentVersions
from kokpit.runtime.controller import (
    Request,
    _Enqueue,
    for_object,
    for_owner,
    generation_changed,
)
from kokpit.runtime.informer import Origin, dispatching
from kokpit.runtime.queue import Priority, WorkQueue


def test_for_owner_maps_only_the_controlling_owner_of_that_kind() -> None:
    def child(*refs: dict[str, object]) -> dict[str, object]:
        return {"metadata": {"name": "c", "namespace": "ns", "ownerReferences": list(refs)}}

    mapper = for_owner("Cluster", "kokpit.io")
    owner = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "name": "a", "controller": True}
    assert mapper(child(owner)) == [Request("ns", "a")]
    assert mapper(child({**owner, "controller": False})) == []
    assert mapper(child({**owner, "kind": "Machine"})) == []
    assert mapper(child({**owner, "apiVersion": "other.io/v1"})) == []
    assert mapper(child()) == []


def test_for_object_and_keys() -> None:
    assert for_object({"metadata": {"name": "n"}}) == [Request("", "n")]
    assert Request("ns", "x").key == "ns/x"
    assert Request("", "node-1").key == "node-1"


def test_generation_changed_ignores_status_only_updates() -> None:
    old = {"metadata": {"generation": 1}}
    assert generation_changed(None, old)
    assert not generation_changed(old, {"metadata": {"generation": 1}})
    assert generation_changed(old, {"metadata": {"generation": 2}})


def test_public_surface_is_curated() -> None:
    """Everything importable from kokpit.runtime (but its submodules) is listed in __all__."""
    public = {
        name
        for name, value in vars(kokpit.runtime).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(kokpit.runtime.__all__) == public


async def test_events_are_queued_by_whose_change_they_are() -> None:
    """Updates and deletes come first, then creations; the first list and the echoes of our
    own writes are routine, whatever the event."""
    queue: WorkQueue[Request] = WorkQueue("t")
    handler = _Enqueue(queue, for_object, None)

    def obj(name: str) -> dict[str, object]:
        return {"metadata": {"name": name, "namespace": "ns"}}

    with dispatching(Origin.LISTED):
        handler.on_add(obj("listed"))
    with dispatching(Origin.OWN_WRITE):
        handler.on_update(obj("our-write"), obj("our-write"))
        handler.on_add(obj("our-create"))
    handler.on_add(obj("created"))
    handler.on_update(obj("changed"), obj("changed"))
    handler.on_delete(obj("deleted"))
    handler.on_update(obj("listed"), obj("listed"))  # a change to a listed one: promoted
    out = []
    while len(queue):
        request, priority = await queue.get_with_priority()
        out.append((request.name, priority))
        queue.done(request)
    assert out == [
        ("changed", Priority.CHANGE),
        ("deleted", Priority.CHANGE),
        ("listed", Priority.CHANGE),
        ("created", Priority.NEW),
        ("our-write", Priority.ROUTINE),
        ("our-create", Priority.ROUTINE),
    ]


async def test_an_echo_that_hands_work_over_is_queued_as_the_change_it_is() -> None:
    """Two controllers of one process share its client: the write of one reaches the other
    as an echo. One its watch names a hand-off comes before the routine work; other echoes,
    and what the first list found, stay routine."""
    queue: WorkQueue[Request] = WorkQueue("t")

    def admitted(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
        return bool(new.get("status", {}).get("phase") == "Cordoning")

    handler = _Enqueue(queue, for_object, None, admitted)

    def obj(name: str, phase: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns"}, "status": {"phase": phase}}

    handler.on_update(obj("requeued", "Draining"), obj("requeued", "Draining"))
    queue.done(await queue.get())  # queue an ordinary change first, then echoes
    with dispatching(Origin.LISTED):
        handler.on_add(obj("listed", "Cordoning"))
    with dispatching(Origin.OWN_WRITE):
        handler.on_update(obj("own-echo", "Draining"), obj("own-echo", "Draining"))
        handler.on_update(obj("admitted", "Pending"), obj("admitted", "Cordoning"))
        handler.on_add(obj("created-admitted", "Cordoning"))
    out = []
    while len(queue):
        request, priority = await queue.get_with_priority()
        out.append((request.name, priority))
        queue.done(request)
    assert out == [
        ("admitted", Priority.CHANGE),
        ("created-admitted", Priority.NEW),
        ("listed", Priority.ROUTINE),
        ("own-echo", Priority.ROUTINE),
    ]


def test_a_client_remembers_its_recent_writes_only() -> None:
    recent = RecentVersions(3)
    for version in ["1", "2", "3", "2", "4"]:
        recent.add(version)
    assert "1" not in recent, "the oldest is forgotten"
    assert all(v in recent for v in ["2", "3", "4"])
