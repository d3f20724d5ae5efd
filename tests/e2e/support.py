"""Helpers for e2e tests: waiting on the real API server without sleeping blindly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kokpit.local import Kubectl
from kokpit.runtime import NotFound

T = TypeVar("T")
#: kokpit's CRDs, as `make generate` writes them.
CRDS = Path(__file__).parents[2] / "config" / "crd"


#: The labels the session's image is built with (the ``kokpit_image`` fixture;
#: tests/e2e/test_kokpit_image.py checks them).
IMAGE_REVISION = "0123abc"
IMAGE_SOURCE = "https://example.org/kokpit.git"


def install_crds(kubectl: Kubectl) -> Kubectl:
    """kokpit's CRDs in ``kubectl``'s cluster, Established when this returns."""
    kubectl.run("apply", "--server-side", "-k", str(CRDS))
    kubectl.wait_established(*(path.stem for path in CRDS.glob("*.kokpit.io.yaml")))
    return kubectl


def eventually(
    check: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


async def until(
    what: str, check: Callable[[], Awaitable[T | None]], within: float, every: float = 0.2
) -> T:
    """Await ``check`` until it returns something truthy (an object not found yet counts as
    not yet); fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(NotFound):
            if found := await check():
                return found
        await asyncio.sleep(every)
    raise AssertionError(f"{what} did not happen within {within} s")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            found: dict[str, Any] = c
            return found
    return None


def taint_keys(node: dict[str, Any]) -> set[str]:
    return {t["key"] for t in node.get("spec", {}).get("taints", [])}
