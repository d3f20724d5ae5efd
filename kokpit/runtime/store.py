"""The informer's local copy of objects, with indexes.

Keys are ``namespace/name`` (``name`` for cluster-scoped objects), as in client-go. An index
maps a value (a namespace, a label value, a field such as ``spec.nodeName``) to the keys of the
objects that have it, so "pods on node X" is a dict lookup, not a scan of every pod.
"""

from __future__ import annotations

import builtins
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

Object = dict[str, Any]
IndexFunc = Callable[[Object], Iterable[str]]

NAMESPACE_INDEX = "namespace"


def object_key(obj: Object) -> str:
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


def by_namespace(obj: Object) -> list[str]:
    ns = obj["metadata"].get("namespace")
    return [ns] if ns else []


def by_label(label: str) -> IndexFunc:
    def index(obj: Object) -> list[str]:
        value = (obj["metadata"].get("labels") or {}).get(label)
        return [value] if value is not None else []

    return index


def by_field(path: str) -> IndexFunc:
    """Index by a dotted field path, e.g. ``spec.nodeName`` or ``spec.clusterRef.name``."""
    parts = path.split(".")

    def index(obj: Object) -> list[str]:
        value: Any = obj
        for part in parts:
            if not isinstance(value, dict) or part not in value:
                return []
            value = value[part]
        return [str(value)] if value not in (None, "") else []

    return index


class Store:
    """Objects by key, plus indexes; only the informer that owns it writes to it."""

    def __init__(self, indexers: dict[str, IndexFunc] | None = None) -> None:
        self._items: dict[str, Object] = {}
        self._indexers: dict[str, IndexFunc] = {NAMESPACE_INDEX: by_namespace, **(indexers or {})}
        self._indices: dict[str, defaultdict[str, set[str]]] = {
            name: defaultdict(set) for name in self._indexers
        }

    def add_indexers(self, indexers: dict[str, IndexFunc]) -> None:
        for name, fn in indexers.items():
            if name in self._indexers and self._indexers[name] is not fn:
                raise ValueError(f"index {name!r} is already defined differently")
            self._indexers[name] = fn
            index: defaultdict[str, set[str]] = defaultdict(set)
            for key, obj in self._items.items():
                for value in fn(obj):
                    index[value].add(key)
            self._indices[name] = index

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Object | None:
        return self._items.get(key)

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def list(self, namespace: str | None = None) -> list[Object]:
        if namespace is None:
            return list(self._items.values())
        return self.by_index(NAMESPACE_INDEX, namespace)

    def by_index(self, index: str, value: str) -> builtins.list[Object]:
        try:
            keys = self._indices[index].get(value, ())
        except KeyError:
            raise KeyError(f"no index named {index!r}") from None
        return [self._items[k] for k in keys]

    def upsert(self, obj: Object) -> Object | None:
        """Store ``obj``; returns the object it replaced, if any."""
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, fn in self._indexers.items():
            for value in fn(obj):
                self._indices[name][value].add(key)
        return old

    def delete(self, key: str) -> Object | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: str, obj: Object) -> None:
        for name, fn in self._indexers.items():
            index = self._indices[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
