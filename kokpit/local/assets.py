"""Where the local meta-cluster's binaries live, and whether they can be trusted.

Binaries are built once per Kubernetes release into ``<cache>/bin/<version>/`` (see
:mod:`kokpit.local.build`). A build directory becomes visible only by an atomic rename after its
``manifest.json`` (sizes and SHA-256 of every file) is written, so a reader sees a whole build
or none. On every use the manifest is checked again; a directory that fails the check is moved
aside and rebuilt, never half-used.

A build made before a binary joined :data:`BINARIES` (the node binaries came later) is not
damaged but *incomplete*: :func:`missing` names what it lacks, and the build completes it with
only those files (minutes), never rebuilding the control plane (the 8-minute part).

``KOKPIT_ASSETS=<dir>`` points at prebuilt binaries instead (from setup-envtest or a
distribution); such a directory is used as it is and never rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kokpit.local.versions import Release

#: The control plane's binaries (and kubectl, and kwok for simulated nodes).
CONTROL_PLANE_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
#: What a real node of the meta-cluster runs (:mod:`kokpit.local.realnode`): the kubelet,
#: kube-proxy, the pod sandbox's ``pause`` and CoreDNS for the meta-cluster's DNS.
NODE_BINARIES = ("kubelet", "kube-proxy", "pause", "coredns")
#: Every binary a complete asset directory holds.
BINARIES = CONTROL_PLANE_BINARIES + NODE_BINARIES
#: kwok's stage definitions (node and pod lifecycles), one multi-document YAML file.
KWOK_STAGES = "kwok-stages.yaml"
MANIFEST = "manifest.json"
#: Subdirectory of a release directory with OCI image archives for real nodes (not in the
#: manifest: others add archives there after the build).
IMAGES_DIR = "images"

Progress = Callable[[str], None]


class AssetsError(RuntimeError):
    """The binaries cannot be found or built; the message says what to do."""


class CorruptAssetsError(AssetsError):
    """A cached build is partial or damaged."""


class IncompleteAssetsError(AssetsError):
    """A sound cached build that lacks binaries added to kokpit after it was made."""

    def __init__(self, directory: Path, lacking: tuple[str, ...]) -> None:
        self.lacking = lacking
        super().__init__(f"{directory} lacks {', '.join(lacking)}")


@dataclass(frozen=True)
class Assets:
    """A verified directory of binaries for one Kubernetes release."""

    root: Path
    kubernetes_version: str

    def bin(self, name: str) -> Path:
        if name == "kubectl" and not (self.root / name).exists():
            found = shutil.which("kubectl")
            if found is None:
                raise AssetsError(f"no kubectl in {self.root} or on PATH")
            return Path(found)
        return self.root / name

    @property
    def kwok_stages(self) -> Path:
        return self.root / KWOK_STAGES

    @property
    def images(self) -> Path:
        """OCI image archives (``*.tar``) a real node imports at ``up``: drop images here."""
        return self.root / IMAGES_DIR


def cache_root() -> Path:
    """``$KOKPIT_CACHE``, else ``$XDG_CACHE_HOME/kokpit``, else ``~/.cache/kokpit``."""
    if env := os.environ.get("KOKPIT_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kokpit"


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold the lock file ``lock`` (created if missing) while the block runs: one build of a
    thing at a time across processes."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def release_dir(release: Release) -> Path:
    return cache_root() / "bin" / release.version


def find(release: Release) -> Assets | None:
    """The usable assets for ``release``, or None if they must be built (or completed).

    A damaged cached build is moved aside (and None returned) so the caller rebuilds it; an
    incomplete one is left in place for the caller to complete (see :func:`missing`).
    """
    if override := os.environ.get("KOKPIT_ASSETS"):
        return from_override(Path(override))
    directory = release_dir(release)
    if not directory.exists():
        return None
    try:
        verify(directory)
    except IncompleteAssetsError:
        return None
    except CorruptAssetsError:
        discard(directory)
        return None
    return Assets(directory, release.version)


def missing(release: Release) -> tuple[str, ...] | None:
    """The binaries a sound cached build of ``release`` lacks (empty if complete), or None
    when there is no sound build to complete."""
    directory = release_dir(release)
    try:
        verify(directory)
    except IncompleteAssetsError as e:
        return e.lacking
    except (CorruptAssetsError, OSError):
        return None
    return ()


def from_override(directory: Path) -> Assets:
    """Assets from ``KOKPIT_ASSETS``: prebuilt binaries, used as they are."""
    required = [n for n in CONTROL_PLANE_BINARIES if n != "kubectl"] + [KWOK_STAGES]
    lacking = [n for n in required if not (directory / n).is_file()]
    if lacking:
        raise AssetsError(
            f"KOKPIT_ASSETS={directory} lacks {', '.join(lacking)}; it must hold the binaries "
            f"{', '.join(CONTROL_PLANE_BINARIES)} (kubectl may come from PATH) and "
            f"{KWOK_STAGES}, the kwok stage files concatenated (and {', '.join(NODE_BINARIES)} "
            "for real nodes)"
        )
    return Assets(directory, binary_version(directory / "kube-apiserver"))


def binary_version(binary: Path) -> str:
    """The version a Kubernetes binary reports (``Kubernetes v1.36.3`` → ``v1.36.3``)."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    words = out.stdout.split()
    if out.returncode != 0 or not words:
        raise AssetsError(f"{binary} --version failed: {out.stderr.strip()[-500:]}")
    return words[-1]


def write_manifest(directory: Path, info: dict[str, object]) -> None:
    """Record every file's size and digest; written last, so its presence means complete."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({**info, "files": files}, indent=2) + "\n")
    tmp.rename(directory / MANIFEST)


def read_manifest(directory: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((directory / MANIFEST).read_text())
    return data


def verify(directory: Path) -> None:
    """Raise :class:`CorruptAssetsError` unless ``directory`` matches its manifest, and then
    :class:`IncompleteAssetsError` if the manifest lacks binaries of :data:`BINARIES` (a build
    from before they were added; the control plane in it is sound)."""
    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError) as e:
        raise CorruptAssetsError(f"{directory}: no readable {MANIFEST} ({e})") from e
    files = manifest.get("files")
    required = set(CONTROL_PLANE_BINARIES) | {KWOK_STAGES}
    if not isinstance(files, dict) or not required <= files.keys():
        raise CorruptAssetsError(f"{directory}: {MANIFEST} does not list every binary")
    for name, want in files.items():
        path = directory / name
        if not path.is_file():
            raise CorruptAssetsError(f"{path} is missing")
        if path.stat().st_size != want["size"] or _sha256(path) != want["sha256"]:
            raise CorruptAssetsError(f"{path} does not match its recorded digest")
    lacking = tuple(n for n in NODE_BINARIES if n not in files)
    if lacking:
        raise IncompleteAssetsError(directory, lacking)


def discard(directory: Path) -> None:
    """Move a damaged build out of the way (atomically), then delete it."""
    aside = directory.with_name(f".{directory.name}.corrupt-{time.time_ns()}")
    directory.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
