"""``kokpit local``: build, start, stop and inspect the embedded local meta-cluster.

    kokpit local build  [--version V]             build (or find) the binaries for V
    kokpit local up     [--version V] [--nodes N] [--real-nodes R]
                                                  start it; N kwok nodes, R real nodes (a
                                                  kubelet, containerd and kube-proxy each);
                                                  returns when ready
    kokpit local down   [--wipe]                  stop it; --wipe deletes its data too
    kokpit local status                           components, pids, health, logs
    kokpit local env                              `eval $(kokpit local env)` sets KUBECONFIG/PATH
    kokpit local image  [--out A] [--revision R] [--source S]
                                                  build kokpit's own image as the OCI archive A
                                                  (root; the Debian mirror and PyPI, no registry)
    kokpit local load   ARCHIVE                   import an OCI archive into the running real
                                                  nodes' containerd (root)

The data directory is ``--data-dir``, else ``$KOKPIT_LOCAL_DIR``, else
``$XDG_DATA_HOME/kokpit/local`` (``~/.local/share/kokpit/local``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from kokpit.local import (
    AlreadyRunningError,
    Kubectl,
    LocalCluster,
    ensure_assets,
    kokpit_image,
    process,
    realnode,
    release,
)
from kokpit.local import nodes as kwok_nodes
from kokpit.local.images import ImageError, image_digest

#: The checkout this kokpit runs from (an editable install): the image is built from it.
CHECKOUT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    if env := os.environ.get("KOKPIT_LOCAL_DIR"):
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "kokpit" / "local"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "local",
        help="the embedded local meta-cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, default=None, help="where the cluster lives")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    b = verbs.add_parser("build", help="build or find the Kubernetes binaries")
    b.add_argument("--version", default=None, help="Kubernetes version (default: newest)")
    b.set_defaults(run=run_build)

    u = verbs.add_parser("up", help="start the cluster and wait until it is ready")
    u.add_argument("--version", default=None, help="Kubernetes version (default: newest)")
    u.add_argument("--nodes", type=int, default=0, help="number of kwok nodes to ensure")
    u.add_argument(
        "--real-nodes",
        type=int,
        default=0,
        help="number of real nodes (kubelet, containerd, kube-proxy; needs root)",
    )
    u.set_defaults(run=run_up)

    d = verbs.add_parser("down", help="stop the cluster (its data is kept)")
    d.add_argument("--wipe", action="store_true", help="also delete all of its data")
    d.set_defaults(run=run_down)

    verbs.add_parser("status", help="show each component").set_defaults(run=run_status)
    verbs.add_parser("env", help="print shell exports for kubectl").set_defaults(run=run_env)

    i = verbs.add_parser("image", help="build kokpit's image as an OCI archive (root)")
    i.add_argument("--out", type=Path, default=Path("dist/kokpit-image.oci.tar"))
    i.add_argument("--project", type=Path, default=CHECKOUT, help="the source checkout")
    i.add_argument("--revision", default="unknown", help="the commit (a label)")
    i.add_argument("--source", default="unknown", help="the source repository's URL (a label)")
    i.set_defaults(run=run_image)

    ld = verbs.add_parser("load", help="import an OCI archive into the running real nodes")
    ld.add_argument("archive", type=Path)
    ld.set_defaults(run=run_load)


def cluster_of(args: argparse.Namespace) -> LocalCluster:
    return LocalCluster(args.data_dir or default_data_dir())


def run_build(args: argparse.Namespace) -> int:
    assets = ensure_assets(release(args.version), progress=_say)
    print(f"Kubernetes {assets.kubernetes_version} binaries: {assets.root}")
    return 0


def run_up(args: argparse.Namespace) -> int:
    cluster = cluster_of(args)
    assets = ensure_assets(release(args.version), progress=_say)
    started = time.monotonic()
    try:
        _say(
            f"starting the local meta-cluster (Kubernetes {assets.kubernetes_version}) "
            f"in {cluster.layout.root}"
        )
        cluster.up(assets, progress=_say, real_nodes=args.real_nodes)
        _say(f"control plane ready in {time.monotonic() - started:.1f} s")
    except AlreadyRunningError as e:
        _say(str(e))
    if args.nodes:
        kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
        names = kwok_nodes.ensure_nodes(kubectl, args.nodes)
        kwok_nodes.wait_ready(kubectl, names)
        _say(f"{len(names)} kwok nodes Ready")
    print_env(cluster, assets.bin("kubectl").parent)
    return 0


def run_down(args: argparse.Namespace) -> int:
    cluster = cluster_of(args)
    cluster.down(wipe=args.wipe)
    _say(f"stopped{' and wiped' if args.wipe else ''}: {cluster.layout.root}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    status = cluster_of(args).status()
    if not status.components:
        print(f"not running ({status.data_dir})")
        return 3
    print(f"Kubernetes {status.kubernetes_version} at {status.server}")
    print(f"KUBECONFIG={status.kubeconfig}")
    for c in status.components:
        state = "healthy" if c.healthy else "running, unhealthy" if c.running else "DEAD"
        print(f"  {c.name:<24} pid {c.pid:<8} {state:<18} log {c.log}")
        if not c.running:
            for line in process.tail(c.log, 5).splitlines():
                print(f"      | {line}")
    return 0 if status.healthy else 1


def run_env(args: argparse.Namespace) -> int:
    cluster = cluster_of(args)
    status = cluster.status()
    if not status.running:
        print(f"kokpit: the local cluster in {status.data_dir} is not running", file=sys.stderr)
        return 3
    version = status.kubernetes_version
    print_env(cluster, ensure_assets(release(version)).bin("kubectl").parent)
    return 0


def run_image(args: argparse.Namespace) -> int:
    labels = kokpit_image.Labels(
        version=kokpit_image.installed_version(), revision=args.revision, source=args.source
    )
    started = time.monotonic()
    _say(f"building {kokpit_image.image_name(labels.version)} from {args.project}")
    try:
        archive = kokpit_image.build(args.out, project=args.project, labels=labels, progress=_say)
    except kokpit_image.ImageBuildError as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    sizes = kokpit_image.sizes(archive)
    print(f"{archive}: {sizes['compressed'] / 1e6:.1f} MB (layers gzipped), ", end="")
    print(f"{sizes['uncompressed'] / 1e6:.1f} MB unpacked; ", end="")
    print(f"built in {time.monotonic() - started:.0f} s; manifest {image_digest(archive)}")
    return 0


def run_load(args: argparse.Namespace) -> int:
    cluster = cluster_of(args)
    try:
        image_digest(args.archive)
    except (ImageError, OSError, KeyError, tarfile.TarError) as e:
        print(f"kokpit: {args.archive} is not an OCI image archive: {e}", file=sys.stderr)
        return 1
    try:
        nodes = realnode.load_image(cluster.supervisor, args.archive)
    except realnode.RealNodeError as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    if not nodes:
        print(f"kokpit: no real node of {cluster.layout.root} is running", file=sys.stderr)
        return 3
    print(f"imported {args.archive} into {', '.join(nodes)}")
    return 0


def print_env(cluster: LocalCluster, kubectl_dir: Path) -> None:
    print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
    print(f"export PATH={shlex.quote(str(kubectl_dir))}:$PATH")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
