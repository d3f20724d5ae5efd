"""How the CLI shows kokpit's objects and gives an operator a person's command.

A command is an annotation on the object: the operator acts on it, records an Event and
removes it, so ``kubectl annotate`` does the same as the CLI, RBAC on the object decides who
may command it, and the audit log shows who did. The CLI returns once the annotation is set.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kokpit.runtime import ApiError, Client, ClientConfig, ConfigError, NotFound, Resource


async def annotate(
    kubeconfig: Path | None,
    resource: Resource,
    name: str,
    namespace: str | None,
    annotation: str,
    value: str,
    request: str | None = None,
) -> int:
    """Set ``annotation`` to ``value`` on the object; say so (``request``: what was asked,
    by default the value), or say why not. Returns the exit code."""
    kind = resource.kind
    where = f"{namespace}/{name}" if namespace else name
    patch = {"metadata": {"annotations": {annotation: value}}}
    try:
        async with Client(ClientConfig.load(kubeconfig)) as client:
            await client.patch(resource, name, patch, namespace=namespace)
    except NotFound:
        print(f"kokpit: no {kind} {where}", file=sys.stderr)
        return 1
    except (ApiError, ConfigError, OSError) as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    print(f"{kind.lower()} {where}: {request or value} requested")
    return 0


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns, as ``kubectl get`` prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def show(
    kubeconfig: Path | None,
    resource: Resource,
    namespace: str | None,
    table: Callable[[list[dict[str, Any]]], str],
) -> int:
    """Print the objects of ``namespace`` (None: all) as ``table`` lays them out; or say why
    not. Returns the exit code."""
    try:
        async with Client(ClientConfig.load(kubeconfig)) as client:
            items = (await client.list(resource, namespace=namespace)).items
    except (ApiError, ConfigError, OSError) as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    print(table(items))
    return 0
