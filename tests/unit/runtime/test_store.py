from typing import Any

import pytest

from kokpit.runtime.store import Store, by_field, by_label, object_key


def pod(name: str, node: str | None, ns: str = "default", **labels: str) -> dict[str, Any]:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec}


def names(objs: list[dict[str, Any]]) -> set[str]:
    return {o["metadata"]["name"] for o in objs}


def test_indexes_follow_updates_and_deletes() -> None:
    store = Store({"node": by_field("spec.nodeName"), "app": by_label("app")})
    store.upsert(pod("a", "n1", app="web"))
    store.upsert(pod("b", "n1", app="db"))
    store.upsert(pod("c", None, ns="other", app="web"))
    assert names(store.by_index("node", "n1")) == {"a", "b"}
    assert names(store.by_index("app", "web")) == {"a", "c"}
    assert names(store.list("other")) == {"c"}

    store.upsert(pod("a", "n2", app="web"))  # moved
    assert names(store.by_index("node", "n1")) == {"b"}
    assert names(store.by_index("node", "n2")) == {"a"}
    store.delete("default/b")
    assert store.by_index("node", "n1") == []
    assert len(store) == 2


def test_an_index_added_later_covers_existing_objects() -> None:
    store = Store()
    store.upsert(pod("a", "n1"))
    store.add_indexers({"node": by_field("spec.nodeName")})
    assert names(store.by_index("node", "n1")) == {"a"}
    with pytest.raises(KeyError, match="no index named 'nope'"):
        store.by_index("nope", "x")


def test_keys_are_namespace_slash_name() -> None:
    assert object_key(pod("a", None, ns="ns")) == "ns/a"
    assert object_key({"metadata": {"name": "node-1"}}) == "node-1"
