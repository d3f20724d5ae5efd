"""Images of a business control plane's components and of CoreDNS, from the cached binaries.

The kubernetes runtime runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler
as pods; on the local meta-cluster's real node their images come from here, not from a
registry: one OCI archive per component (:func:`kokpit.local.images.write_image`) in the
release directory's ``images/``, which ``local up`` imports into the node's containerd. They
are named as the runtime names them with ``--image-repository`` :data:`REPOSITORY`
(:func:`image`): ``localhost/kokpit/etcd:3.6.8-0``,
``localhost/kokpit/kube-apiserver:v1.36.3``, ..., so ``imagePullPolicy: IfNotPresent`` finds
them and nothing is pulled.

Each image is the one statically linked binary in ``/usr/local/bin`` plus ``/etc/passwd`` and
``/etc/group`` naming the ``nonroot`` user 65532 the pods run as (as distroless does), and
nothing else: no shell, no libc. An archive already there is kept (a release directory's
binaries never change; a rebuild replaces the whole directory, archives included). Archives
are named ``<component>-<tag>.tar``, so one ``images/`` can hold several releases' images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from kokpit.local.assets import Assets, find, read_manifest
from kokpit.local.images import write_image
from kokpit.local.versions import RELEASES

#: The repository the local images are named in (the operator's ``--image-repository``).
REPOSITORY = "localhost/kokpit"
#: The components that get an image, in the order they are written.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "coredns")
PASSWD = (
    b"root:x:0:0:root:/root:/sbin/nologin\n"
    b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = b"root:x:0:\nnonroot:x:65532:\n"


def image(repository: str, component: str, version: str) -> str:
    """The image of ``component`` at ``version`` in ``repository``, tagged as
    registry.k8s.io tags them (etcd ``3.6.5-0``, the others ``v1.36.3``)."""
    tag = f"{version.lstrip('v')}-0" if component == "etcd" else version
    return f"{repository.rstrip('/')}/{component}:{tag}"


def image_names(assets: Assets) -> dict[str, str]:
    """Each component's image name for ``assets`` (etcd and CoreDNS at the versions the
    release's manifest records; CoreDNS only if the build has it)."""
    manifest = read_manifest(assets.root)
    versions = {
        "etcd": str(manifest["etcd"]),
        "kube-apiserver": assets.kubernetes_version,
        "kube-controller-manager": assets.kubernetes_version,
        "kube-scheduler": assets.kubernetes_version,
    }
    if "coredns" in manifest and assets.bin("coredns").exists():
        versions["coredns"] = str(manifest["coredns"])
    return {c: image(REPOSITORY, c, versions[c]) for c in COMPONENTS if c in versions}


def ensure_images(
    assets: Assets,
    progress: Callable[[str], None] = print,
    others: Iterable[Assets] | None = None,
) -> list[Path]:
    """Write the archives of ``assets``' release and of every other built release
    (``others``; by default each of :data:`~kokpit.local.versions.RELEASES` that is cached)
    into its own ``images/``, and make them all visible in ``assets.images`` (hard links, no
    copies), which ``local up`` imports: a meta-cluster at one release then runs business
    control planes at every built release, as upgrades need. Returns the archives there."""
    releases = [assets, *(others if others is not None else _built(assets))]
    visible: list[Path] = []
    for release in releases:
        for archive in _write(release, progress):
            here = assets.images / archive.name
            if here != archive and not here.exists():
                assets.images.mkdir(parents=True, exist_ok=True)
                os.link(archive, here)
            visible.append(here)
    return sorted(set(visible))


def _built(assets: Assets) -> list[Assets]:
    others = (find(r) for r in RELEASES if r.version != assets.kubernetes_version)
    return [a for a in others if a is not None]


def _write(assets: Assets, progress: Callable[[str], None]) -> list[Path]:
    """The archives of ``assets``' own release, written where missing: ``<component>-<version
    of its image>.tar``."""
    archives: list[Path] = []
    for component, name in image_names(assets).items():
        archive = assets.images / f"{component}-{name.rsplit(':', 1)[1]}.tar"
        if not archive.exists():
            binary = f"/usr/local/bin/{component}"
            progress(f"  image {name}")
            write_image(
                archive,
                name=name,
                files={binary: assets.bin(component), "/etc/passwd": PASSWD, "/etc/group": GROUP},
                entrypoint=[binary],
                user="65532:65532",
            )
        archives.append(archive)
    return archives
