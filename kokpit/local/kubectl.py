"""A thin, typed wrapper over the real ``kubectl`` for set-up work on the local cluster.

The local-cluster tooling talks to the API server through the same kubectl a person uses,
built at the cluster's own version, so what ``make demo`` prints can be pasted and rerun.
Operators do not use this: they use :mod:`kokpit.runtime`.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 300.0


class KubectlError(RuntimeError):
    """kubectl exited non-zero; carries its stderr, which is the API server's message."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"kubectl {' '.join(args)} failed (exit {returncode}): {self.stderr}")


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        proc = subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise KubectlError(args, proc.returncode, proc.stderr)
        return proc.stdout

    def get(self, *args: str) -> Any:
        """``kubectl get ... -o json``, parsed."""
        return json.loads(self.run("get", *args, "-o", "json"))

    def wait_established(self, *crds: str, timeout_s: float = 60.0) -> None:
        """Wait until each CRD (by name) is Established. Polls, because ``kubectl wait`` fails
        outright on a CRD whose status has no conditions yet."""
        deadline = time.monotonic() + timeout_s
        pending = list(crds)
        while pending:
            path = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
            pending = [c for c in pending if self.run("get", "crd", c, "-o", path) != "True"]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not Established after {timeout_s:.0f} s: {pending}")
            if pending:
                time.sleep(0.2)

    def apply(self, objects: Sequence[dict[str, Any]], *, field_manager: str = "kokpit") -> None:
        """Server-side apply a list of objects in one kubectl call."""
        manifest = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.run(
            "apply",
            "--server-side",
            f"--field-manager={field_manager}",
            "-f",
            "-",
            stdin=json.dumps(manifest),
        )
