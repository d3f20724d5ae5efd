"""``kokpit migrate-storage``: every object of kokpit's kinds stored at its CRD's storage version.

    kokpit migrate-storage [--kubeconfig PATH] [--dry-run]

When a release moves a CRD's storage version (say from v1alpha1 to v1alpha2, both served:
docs/api-versions.md), the API server writes new and changed objects at the new version but
leaves every other object in etcd as it was, and lists both versions in the CRD's
``status.storedVersions``. The old version cannot be removed from the CRD while that list names
it (the API server refuses), and a conversion that later drops the old version would find
objects it can no longer read. This command finishes the move, for each of kokpit's CRDs:

1. it reads the CRD's storage version, and lists every object of the kind at that version;
2. it writes each object back unchanged (a PUT with the object's resourceVersion). The API
   server decodes it from whatever version it is stored at, encodes it at the storage version,
   and writes it only if the bytes differ: an object already stored at the storage version is
   not written again (its resourceVersion stays). An object changed or deleted since the list
   needs nothing more: whoever changed it wrote it at the storage version;
3. once every object of the kind is written, and if the storage version has not changed
   meanwhile, it sets ``status.storedVersions`` to the storage version alone.

The objects are written as they are, so their spec and status never change and their
generation does not move: an operator that sees the write finds nothing to do. An object that
the current schema no longer accepts is still written where only unchanged fields fail a rule
(the API server's validation ratcheting); one that cannot be written is named, and that CRD's
storedVersions is left as it was. Running it again is harmless. It needs ``list`` and
``update`` on kokpit's kinds and ``update`` on ``customresourcedefinitions/status``: run it as
a cluster admin.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kokpit.api.schema import Kind, storage_version
from kokpit.api.v1alpha1 import KINDS
from kokpit.runtime import (
    ApiError,
    Client,
    ClientConfig,
    ConfigError,
    Conflict,
    NotFound,
    PatchType,
    Resource,
)
from kokpit.runtime.resources import CRDS

Object = dict[str, Any]

#: How many objects are written at once (the client's rate limit applies as well).
CONCURRENT_WRITES = 8
#: How many times storedVersions is set again when the CRD changed in between (its conditions).
TRIM_ATTEMPTS = 5


class MigrationError(RuntimeError):
    """A CRD's storage version changed while its objects were being written."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "migrate-storage",
        help="rewrite every object of kokpit's kinds at its CRD's storage version",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, default=None)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say, per CRD, its storage version, storedVersions and how many objects it has; "
        "write nothing",
    )
    p.set_defaults(run=run)


@dataclass
class Outcome:
    """What was done for one CRD."""

    crd: str
    storage: str
    stored_before: list[str]
    objects: int = 0
    #: Objects the API server wrote (they were stored at another version, or in another form).
    rewritten: int = 0
    #: Objects changed or deleted by someone else since the list (so written at storage too).
    moved_on: int = 0
    #: Objects the API server refused to write, with its words.
    refused: list[str] = field(default_factory=list)
    stored_after: list[str] | None = None

    def __str__(self) -> str:
        stored = ", ".join(self.stored_before)
        line = (
            f"{self.crd}: {_objects(self.objects)} at {self.storage} ({self.rewritten} rewritten, "
            f"{self.objects - self.rewritten - self.moved_on - len(self.refused)} already "
            f"stored there, {self.moved_on} changed or deleted meanwhile); storedVersions "
            f"[{stored}]"
        )
        if self.stored_after is not None and self.stored_after != self.stored_before:
            line += f" -> [{', '.join(self.stored_after)}]"
        for refusal in self.refused:
            line += f"\n  refused: {refusal}"
        if self.refused:
            line += "\n  storedVersions left as it was: write or fix these objects, then run again"
        return line


def run(args: argparse.Namespace) -> int:
    try:
        outcomes = asyncio.run(migrate(ClientConfig.load(args.kubeconfig), dry_run=args.dry_run))
    except (ApiError, ConfigError, OSError, MigrationError, ValueError) as e:
        print(f"kokpit migrate-storage: {e}", file=sys.stderr)
        return 1
    return 1 if any(o.refused for o in outcomes) else 0


async def migrate(config: ClientConfig, *, dry_run: bool = False) -> list[Outcome]:
    """Each installed CRD of kokpit's kinds migrated (or, with ``dry_run``, described)."""
    outcomes = []
    async with Client(config) as client:
        for kind in KINDS:
            name = f"{kind.plural}.{kind.group}"
            try:
                crd = await client.get(CRDS, name)
            except NotFound:
                print(f"{name}: not installed")
                continue
            if dry_run:
                outcome = await _describe(client, kind, crd)
                print(
                    f"{name}: storage version {outcome.storage}, storedVersions "
                    f"[{', '.join(outcome.stored_before)}]; would write {_objects(outcome.objects)}"
                )
            else:
                outcome = await migrate_kind(client, kind, crd)
                print(outcome)
            outcomes.append(outcome)
    return outcomes


def _objects(count: int) -> str:
    return f"{count} object" if count == 1 else f"{count} objects"


def _at(kind: Kind, version: str) -> Resource:
    """``kind``'s objects addressed at ``version`` (the CRD's, not necessarily this release's)."""
    resource = kind.resource
    return Resource(resource.group, version, resource.plural, resource.kind, resource.namespaced)


async def _describe(client: Client, kind: Kind, crd: Object) -> Outcome:
    storage = storage_version(crd)
    listed = await client.list(_at(kind, storage), metadata_only=True)
    return Outcome(crd["metadata"]["name"], storage, _stored(crd), objects=len(listed.items))


def _stored(crd: Object) -> list[str]:
    return list((crd.get("status") or {}).get("storedVersions") or [])


async def migrate_kind(client: Client, kind: Kind, crd: Object) -> Outcome:
    """Write every object of ``kind`` at ``crd``'s storage version, then trim storedVersions."""
    storage = storage_version(crd)
    resource = _at(kind, storage)
    outcome = Outcome(crd["metadata"]["name"], storage, _stored(crd))
    listed = await client.list(resource)
    outcome.objects = len(listed.items)
    slots = asyncio.Semaphore(CONCURRENT_WRITES)

    async def rewrite(obj: Object) -> None:
        async with slots:
            await _rewrite(client, resource, obj, outcome)

    async with asyncio.TaskGroup() as group:
        for obj in listed.items:
            group.create_task(rewrite(obj))
    if not outcome.refused:
        outcome.stored_after = await _trim(client, outcome.crd, storage)
    return outcome


async def _rewrite(client: Client, resource: Resource, obj: Object, outcome: Outcome) -> None:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    try:
        written = await client.replace(resource, obj)
    except (Conflict, NotFound):
        outcome.moved_on += 1
        return
    except ApiError as e:
        outcome.refused.append(f"{resource.kind} {where}: {e.message}")
        return
    if written["metadata"]["resourceVersion"] != meta["resourceVersion"]:
        outcome.rewritten += 1


async def _trim(client: Client, name: str, storage: str) -> list[str]:
    """Set CRD ``name``'s storedVersions to ``[storage]``, unless its storage version changed
    since its objects were written (then objects may be stored at a version not migrated to)."""
    for _ in range(TRIM_ATTEMPTS):
        crd = await client.get(CRDS, name)
        if storage_version(crd) != storage:
            raise MigrationError(
                f"the storage version of {name} changed from {storage} to "
                f"{storage_version(crd)} while its objects were written: run again"
            )
        if _stored(crd) == [storage]:
            return [storage]
        patch = {
            "metadata": {"resourceVersion": crd["metadata"]["resourceVersion"]},
            "status": {"storedVersions": [storage]},
        }
        try:
            await client.patch(CRDS, name, patch, patch_type=PatchType.MERGE, subresource="status")
        except Conflict:
            continue
        return [storage]
    raise MigrationError(
        f"the CRD {name} kept changing: its storedVersions were not set; run again"
    )
