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
binaries never change; a rebuild replaces the whole directory, archives included).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kokpit.local.assets import Assets, read_manifest
from kokpit.local.images import write_image

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


def ensure_images(assets: Assets, progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Write the archive of every component of :func:`image_names` that is missing; return
    every archive by component."""
    archives: dict[str, Path] = {}
    for component, name in image_names(assets).items():
        archive = assets.images / f"{component}.tar"
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
        archives[component] = archive
    return archives
