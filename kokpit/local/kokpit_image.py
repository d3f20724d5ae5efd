"""kokpit's own image, built on this machine from the Debian mirror and PyPI (no registry).

The ``Dockerfile`` builds the image for anyone with Docker or BuildKit. Here no container
registry can be reached, so :func:`build` makes the same image from what can be: a Debian
bookworm root filesystem from the Debian mirror (``mmdebstrap``, variant ``essential``, with
``python3``) and the project's virtualenv in ``/opt/kokpit/venv``, made by that root
filesystem's own Python (in a ``chroot``) from the hash-pinned runtime lock
(``requirements-image.lock``, wheels only, downloaded and hash-checked on the host, installed
offline) and kokpit's own wheel. It is written as an OCI archive
(:func:`kokpit.local.images.write_layered_image`) that a real node's containerd imports
(:func:`kokpit.local.realnode.load_image`).

The final tree keeps no package manager and no build tools: the virtualenv's pip, Debian's
``python3-venv`` (and the pip and setuptools wheels it brings) and perl are purged, then the
files of dpkg, debconf, perl-base and the init-system helpers are deleted (:func:`strip`);
apt is never installed. ``/var/lib/dpkg/status`` stays, without the removed packages, so
image scanners still see which Debian packages the image holds. Two layers: the Debian tree,
then the virtualenv, as the Dockerfile's base image and its ``COPY --from=builder``.

Building needs root (mmdebstrap's ``root`` mode and ``chroot``), the ``mmdebstrap`` package, and
the network to the Debian mirror and PyPI.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from kokpit.local.component_images import REPOSITORY
from kokpit.local.images import add_tree, unpacked_size, write_layered_image

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: Where the virtualenv lives in the image (the Dockerfile's too).
VENV = "/opt/kokpit/venv"
#: The Debian packages asked for; the rest of the tree is their dependencies and the
#: ``essential`` set. ``usr-is-merged`` stands in for ``usrmerge`` (which would pull in perl);
#: ``ca-certificates`` lets kokpit reach https endpoints signed by a public CA (a BMC, a
#: Prometheus) as well as the API servers whose CA a kubeconfig names.
PACKAGES = ("python3", "python3-venv", "usr-is-merged", "ca-certificates")
#: Needed only to build the virtualenv, or brought in only by ``usrmerge`` (which the
#: essential set installs, with perl, though ``usr-is-merged`` does its job): purged (with dpkg,
#: so their maintainer scripts run).
BUILD_ONLY = (
    "python3-venv",
    "python3.11-venv",
    "python3-pip-whl",
    "python3-setuptools-whl",
    "python3-distutils",
    "python3-lib2to3",
    "usrmerge",
    "libfile-find-rule-perl",
    "libnumber-compare-perl",
    "libtext-glob-perl",
    "perl",
    "perl-modules-5.36",
    "libperl5.36",
    "libgdbm-compat4",
)
#: The package manager and what only it needs: their files are deleted after the build.
PACKAGE_MANAGER = ("dpkg", "debconf", "perl-base", "init-system-helpers", "usr-is-merged")
#: Files dpkg installs that nothing at run time reads (documentation, manuals, translations).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
#: Left out of the layers: the mount points' contents (a runtime mounts them) and caches.
EMPTIED = ("dev", "proc", "sys", "run", "tmp", "var/tmp", "var/cache", "var/log")
USER = 65532
PASSWD_ENTRY = f"nonroot:x:{USER}:{USER}:nonroot:/home/nonroot:/usr/sbin/nologin\n"
GROUP_ENTRY = f"nonroot:x:{USER}:\n"
ENV = (
    f"PATH={VENV}/bin:/usr/local/bin:/usr/bin:/bin",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class Labels:
    """The OCI annotations the image carries (the Dockerfile's build arguments)."""

    version: str
    revision: str
    source: str

    def as_dict(self) -> dict[str, str]:
        return {
            "org.opencontainers.image.title": "kokpit",
            "org.opencontainers.image.description": (
                "A fleet manager for Kubernetes in the kube-on-kube style."
            ),
            "org.opencontainers.image.version": self.version,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.source": self.source,
            "org.opencontainers.image.licenses": "Apache-2.0",
        }


def installed_version() -> str:
    """kokpit's version as installed (pyproject.toml's, through the package metadata)."""
    return metadata.version("kokpit")


def image_name(version: str) -> str:
    """``localhost/kokpit/kokpit:0.1.0``, beside the component images."""
    return f"{REPOSITORY}/kokpit:{version}"


def build(
    out: Path,
    *,
    project: Path,
    labels: Labels,
    progress: Callable[[str], None] = print,
) -> Path:
    """Build the image of the project at ``project`` (its ``requirements-image.lock`` and its
    sources) into the OCI archive ``out``; returns it. The scratch space (about 300 MB) is
    beside ``out`` and removed afterwards, whatever happens."""
    if os.geteuid() != 0:
        raise ImageBuildError("building the image needs root (mmdebstrap's root mode, chroot)")
    if shutil.which("mmdebstrap") is None:
        raise ImageBuildError("mmdebstrap is missing: apt-get install mmdebstrap")
    lock = project / "requirements-image.lock"
    if not lock.is_file():
        raise ImageBuildError(f"{lock} is missing")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".kokpit-image-") as scratch:
        wheels = Path(scratch) / "wheels"
        rootfs = Path(scratch) / "rootfs"
        progress("  wheels: the runtime lock (hash-checked) and kokpit's own")
        download_wheels(project, wheels)
        progress(f"  root filesystem: Debian {SUITE} with python3 (mmdebstrap)")
        bootstrap(rootfs, wheels)
        strip(rootfs)
        add_user(rootfs)
        progress(f"  OCI archive {out}")
        write(rootfs, out, labels)
    return out


def download_wheels(project: Path, wheels: Path) -> None:
    """Every wheel of the lock (no source distributions: no compiler in the image), checked
    against the lock's hashes by pip, plus kokpit's wheel built from ``project``. The host's
    Python is the same minor version as the image's, and both are glibc x86-64, so pip picks
    the wheels the image can load."""
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    lock = project / "requirements-image.lock"
    _run([*pip, "download", "--require-hashes", "--no-deps", "--only-binary=:all:",
          "-r", str(lock), "-d", str(wheels)], "downloading the wheels")  # fmt: skip
    # Built from a copy of what the Dockerfile copies: setuptools builds in the source tree,
    # and a checkout's stale build/ would put modules deleted since into the wheel.
    source = wheels.parent / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(project / name, source / name)
    shutil.copytree(
        project / "kokpit", source / "kokpit", ignore=shutil.ignore_patterns("__pycache__")
    )
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(wheels), str(source)], "building kokpit's wheel")  # fmt: skip
    shutil.copy(lock, wheels / "requirements-image.lock")


def customize_hook(wheels: Path) -> str:
    """The shell commands mmdebstrap runs in its customize step (``$1`` is the tree, with
    /proc and /dev mounted): the virtualenv made by the tree's own Python, offline from
    ``wheels``, then its pip and everything only the build needed, purged."""
    venv_pip = f"{VENV}/bin/python -m pip --disable-pip-version-check -q"
    own = next(wheels.glob("kokpit-*.whl")).name
    return "\n".join(
        [
            "set -eu",
            f'cp -r {shlex.quote(str(wheels))} "$1/tmp/wheels"',
            f'chroot "$1" python3 -m venv {VENV}',
            f'chroot "$1" {venv_pip} install --no-index --find-links /tmp/wheels '
            "--require-hashes --no-deps -r /tmp/wheels/requirements-image.lock",
            f'chroot "$1" {venv_pip} install --no-index --no-deps /tmp/wheels/{shlex.quote(own)}',
            f'chroot "$1" {venv_pip} uninstall -y pip',
            'rm -rf "$1/tmp/wheels"',
            f'chroot "$1" dpkg --purge {" ".join(BUILD_ONLY)}',
        ]
    )


def bootstrap(rootfs: Path, wheels: Path) -> None:
    """The Debian tree with the virtualenv in it (mmdebstrap into the directory ``rootfs``)."""
    command = [
        "mmdebstrap",
        "--mode=root",
        "--variant=essential",
        "--quiet",
        f"--include={','.join(PACKAGES)}",
        *(f"--dpkgopt={option}" for option in DPKG_EXCLUDES),
        f"--customize-hook={customize_hook(wheels)}",
        SUITE,
        str(rootfs),
        MIRROR,
    ]
    _run(command, "mmdebstrap")


def strip(rootfs: Path, packages: tuple[str, ...] = PACKAGE_MANAGER) -> list[str]:
    """Delete the files of ``packages`` (as their dpkg file lists name them; directories
    stay), then dpkg's database but its ``status``, which keeps the other packages' entries
    for scanners. Returns the paths deleted, relative to the tree."""
    info = rootfs / "var/lib/dpkg/info"
    removed: list[str] = []
    for package in packages:
        for listing in (info / f"{package}.list", info / f"{package}:amd64.list"):
            if not listing.is_file():
                continue
            for line in listing.read_text().splitlines():
                path = rootfs / line.lstrip("/")
                # A directory the package shares, or a link to one (``/lib`` → ``usr/lib``
                # in a merged-/usr tree, which lists name as directories): never removed.
                if path.is_dir():
                    continue
                if path.is_symlink() or path.is_file():
                    path.unlink()
                    removed.append(line)
    status = rootfs / "var/lib/dpkg/status"
    kept = [
        entry
        for entry in status.read_text().split("\n\n")
        if entry.strip() and _package_of(entry) not in packages
    ]
    database = rootfs / "var/lib/dpkg"
    for entry in list(database.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    status.write_text("\n\n".join(e.strip("\n") for e in kept) + "\n")
    for leftover in ("etc/dpkg", "etc/apt", "var/lib/apt", "var/cache/debconf", "var/lib/debconf"):
        shutil.rmtree(rootfs / leftover, ignore_errors=True)
    return removed


def _package_of(entry: str) -> str:
    for line in entry.splitlines():
        if line.startswith("Package: "):
            return line.removeprefix("Package: ").strip()
    return ""


def add_user(rootfs: Path) -> None:
    """The ``nonroot`` user 65532 the image runs as (distroless's), with a home it owns."""
    for name, entry in (("passwd", PASSWD_ENTRY), ("group", GROUP_ENTRY)):
        path = rootfs / "etc" / name
        if entry.split(":", 1)[0] + ":" not in path.read_text():
            with path.open("a") as f:
                f.write(entry)
    home = rootfs / "home/nonroot"
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, USER, USER)


def write(rootfs: Path, out: Path, labels: Labels) -> Path:
    """The OCI archive of ``rootfs``: the Debian tree, then the virtualenv."""
    venv = VENV.lstrip("/")

    def skipped(name: str) -> bool:
        return name == venv or any(name.startswith(f"{e}/") for e in EMPTIED)

    def debian(tar: tarfile.TarFile) -> None:
        for entry in sorted(os.listdir(rootfs)):
            add_tree(tar, rootfs / entry, entry, skip=skipped)

    return write_layered_image(
        out,
        name=image_name(labels.version),
        layers=[debian, lambda tar: add_tree(tar, rootfs / venv, venv)],
        entrypoint=["kokpit"],
        cmd=["--help"],
        user=f"{USER}:{USER}",
        env=ENV,
        working_dir="/home/nonroot",
        labels=labels.as_dict(),
    )


def _run(command: list[str], step: str) -> None:
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise ImageBuildError(
            f"{step} failed (exit {proc.returncode} after {time.monotonic() - started:.0f} s): "
            f"{tail}"
        )


def sizes(archive: Path) -> Mapping[str, int]:
    """The archive's size (what is copied and imported: compressed layers) and the image's
    unpacked size (the layers' uncompressed tars)."""
    return {"compressed": archive.stat().st_size, "uncompressed": unpacked_size(archive)}
