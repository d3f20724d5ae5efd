"""helm, built from its Go module into the assets cache, for the chart's tests and users.

The chart (``charts/kokpit``) is tested with a real ``helm``, built the way the meta-cluster's
binaries are (:mod:`kokpit.local.build`): ``go install`` of :data:`HELM_MODULE` at
:data:`HELM_VERSION` from the Go module proxy, with the version flags Helm's own Makefile sets
(without them ``helm version`` says ``v3.22`` and ``helm template`` assumes Kubernetes 1.20,
older than the chart's ``kubeVersion``). It does not depend on the Kubernetes release, so it
lives beside the releases' directories, in ``<cache>/tools/helm/<version>/helm``, and is built
on its own (a minute or two; ``make helm``), never as part of a Kubernetes build.

Helm 3, not 4: it is the Helm most platform teams run, and the chart (``apiVersion: v2``) is
the same for both; the tests prove it with this one.

The build goes to a private directory renamed into place once ``helm version`` answers, so a
killed build leaves nothing half-usable; one build at a time across processes.

    python -m kokpit.local.helm     build helm if it is missing, then print its path
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from kokpit.local.assets import AssetsError, Progress, cache_root, exclusive
from kokpit.local.build import BuildError, go_build, go_download, require_go

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.22.0"


def directory() -> Path:
    return cache_root() / "tools" / "helm" / HELM_VERSION


def find() -> Path | None:
    """The built helm, or None if it must be built."""
    binary = directory() / "helm"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def ensure(progress: Progress = print) -> Path:
    """The built helm, building it first when it is missing."""
    if (found := find()) is not None:
        return found
    with exclusive(cache_root() / "tools" / ".helm.lock"):
        if (found := find()) is not None:  # another process built it while we waited
            return found
        build(directory(), progress)
    found = find()
    if found is None:
        raise AssetsError(f"the build of helm {HELM_VERSION} left no {directory() / 'helm'}")
    return found


def build(dest: Path, progress: Progress) -> None:
    """``go install`` helm into a private directory, check it, and rename it to ``dest``."""
    go = require_go(f"building helm {HELM_VERSION}")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    work = cache_root() / "build" / "helm"
    work.mkdir(parents=True, exist_ok=True)
    out = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    progress(f"building helm {HELM_VERSION} with {go} into {dest}")
    gomod = Path(go_download(go, f"{HELM_MODULE}@{HELM_VERSION}", env, work)["GoMod"])
    go_build(
        [
            *(go, "install", "-v", "-trimpath"),
            *("-ldflags", ldflags(gomod.read_text())),
            f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}",
        ],
        work,
        {**env, "GOBIN": str(out)},
        progress,
    )
    said = subprocess.run(
        [str(out / "helm"), "version", "--short"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if not said.stdout.startswith(HELM_VERSION):
        raise BuildError(f"the built helm says {said.stdout.strip()!r} {said.stderr.strip()!r}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    out.rename(dest)
    progress(f"built {said.stdout.strip()}")


def ldflags(gomod: str) -> str:
    """What Helm's Makefile passes: its version, and the Kubernetes version it assumes when no
    cluster is asked (``helm template``, ``helm lint``), which is the one after its client-go
    (``k8s.io/client-go v0.37.0`` → 1.37)."""
    client_go = re.search(r"^\s*k8s\.io/client-go\s+v0\.(\d+)\.", gomod, re.MULTILINE)
    if client_go is None:
        raise BuildError(f"{HELM_MODULE}@{HELM_VERSION} go.mod requires no k8s.io/client-go")
    minor = client_go.group(1)
    flags = [
        "-s",
        "-w",
        f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}",
        f"-X {HELM_MODULE}/internal/version.gitTreeState=clean",
    ]
    for package in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [
            f"-X {HELM_MODULE}/{package}.k8sVersionMajor=1",
            f"-X {HELM_MODULE}/{package}.k8sVersionMinor={minor}",
        ]
    return " ".join(flags)


def main() -> int:
    try:
        print(ensure(progress=lambda line: print(line, file=sys.stderr)))
    except AssetsError as e:
        print(f"helm: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
