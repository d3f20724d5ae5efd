"""Write what a reconcile changed, and nothing else: snapshot before, diff after.

A reconcile takes a :class:`PatchHelper` snapshot of the object as read, mutates its own copy
(finalizers, labels, annotations, status), and calls :meth:`PatchHelper.patch` once at the end.
The helper sends at most two JSON merge patches — one for metadata and spec, one for the status
subresource — each only if something changed, so a reconcile that changes nothing writes
nothing. A metadata patch that touches ``finalizers`` carries the resourceVersion it was based
on, because a merge patch replaces lists whole and another controller's finalizer must not be
lost. The status patch always carries it: a reconcile that started from a cache that had not
yet seen the last status write would otherwise put older facts back. A stale version fails with
Conflict and the reconcile is retried from fresh state.
"""

from __future__ import annotations

import copy
from typing import Any

from kokpit.runtime.client import Client, Object
from kokpit.runtime.resources import Resource


def merge_patch(before: Any, after: Any) -> Any:
    """The RFC 7386 JSON merge patch that turns ``before`` into ``after`` (None if equal)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None if before == after else after
    patch: dict[str, Any] = {}
    for key in before.keys() - after.keys():
        patch[key] = None
    for key, value in after.items():
        if key not in before:
            patch[key] = value
        elif before[key] != value:
            sub = merge_patch(before[key], value)
            patch[key] = sub if sub is not None or isinstance(value, dict) else value
    return patch or None


class PatchHelper:
    def __init__(self, client: Client, resource: Resource, obj: Object) -> None:
        self.client = client
        self.resource = resource
        self._before = copy.deepcopy(obj)

    async def patch(self, obj: Object) -> Object | None:
        """Send what changed since the snapshot; returns the last object written, if any."""
        meta = obj["metadata"]
        written: Object | None = None
        main_before = {k: v for k, v in self._before.items() if k != "status"}
        main_after = {k: v for k, v in obj.items() if k != "status"}
        main = merge_patch(_writable(main_before), _writable(main_after))
        if main:
            if "finalizers" in main.get("metadata", {}):
                main["metadata"]["resourceVersion"] = self._before["metadata"]["resourceVersion"]
            written = await self.client.patch(
                self.resource, meta["name"], main, namespace=meta.get("namespace")
            )
        status = merge_patch(self._before.get("status") or {}, obj.get("status") or {})
        if status:
            # Conditional, like the finalizers: a status computed from a stale read must not
            # overwrite a newer one (the reconcile is retried from fresh state instead).
            based_on = (written or self._before)["metadata"]["resourceVersion"]
            written = await self.client.patch(
                self.resource,
                meta["name"],
                {"metadata": {"resourceVersion": based_on}, "status": status},
                namespace=meta.get("namespace"),
                subresource="status",
            )
        if written is not None:
            self._before = copy.deepcopy(written)
        return written


def _writable(obj: Object) -> Object:
    """Drop the metadata the server owns, so it never shows up as a change."""
    out = dict(obj)
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in _SERVER_OWNED}
    out["metadata"] = meta
    return out


_SERVER_OWNED = {
    "resourceVersion",
    "generation",
    "managedFields",
    "creationTimestamp",
    "uid",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
}
