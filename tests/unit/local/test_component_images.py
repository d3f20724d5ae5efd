"""The component images written from cached binaries: named as the kubernetes runtime names
them with ``--image-repository localhost/kokpit``, one binary and the nonroot user each."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from kokpit.local.assets import Assets
from kokpit.local.component_images import REPOSITORY, ensure_images
from kokpit.providers.controlplane import ComponentPlan, ControlPlane
from kokpit.providers.controlplane.kubernetes import KubernetesRuntime, KubernetesRuntimeOptions
from kokpit.runtime import Client, ClientConfig


def fake_release(root: Path) -> Assets:
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"etcd": "v3.6.8", "coredns": "v1.14.7"}))
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "coredns"):
        (root / name).write_bytes(b"\x7fELF" + name.encode())
        (root / name).chmod(0o755)
    return Assets(root, "v1.36.3")


def contents(archive: Path) -> tuple[str, dict[str, tarfile.TarInfo], dict[str, bytes]]:
    """The image's name, and its one layer's entries and file contents."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_digest = index["manifests"][0]["digest"].removeprefix("sha256:")
        manifest = json.load(tar.extractfile(f"blobs/sha256/{manifest_digest}"))  # type: ignore[arg-type]
        layer_digest = manifest["layers"][0]["digest"].removeprefix("sha256:")
        layer = tar.extractfile(f"blobs/sha256/{layer_digest}").read()  # type: ignore[union-attr]
    name = index["manifests"][0]["annotations"]["io.containerd.image.name"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
        members = {m.name: m for m in inner.getmembers()}
        files = {
            m.name: inner.extractfile(m).read()  # type: ignore[union-attr]
            for m in members.values()
            if m.isfile()
        }
    return name, members, files


def test_each_component_gets_the_image_the_runtime_asks_for(tmp_path: Path) -> None:
    assets = fake_release(tmp_path / "v1.36.3")
    archives = ensure_images(assets, progress=lambda _: None)
    runtime = KubernetesRuntime(
        Client(ClientConfig("https://unused.invalid")),
        KubernetesRuntimeOptions(image_repository=REPOSITORY),
    )
    cp = ControlPlane("ns", "biz", "uid")
    versions = {"etcd": "v3.6.8"}
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        plan = ComponentPlan(component, versions.get(component, "v1.36.3"))
        _, obj = runtime._workload(cp, plan)
        container = obj["spec"]["template"]["spec"]["containers"][0]
        name, members, files = contents(archives[component])
        assert name == container["image"], component
        assert archives[component].parent == assets.images
        binary = f"usr/local/bin/{component}"
        assert files[binary] == (assets.root / component).read_bytes()
        assert members[binary].mode & 0o111
        assert b"nonroot:x:65532:65532:" in files["etc/passwd"]
        assert set(files) == {binary, "etc/passwd", "etc/group"}, "nothing but the binary"
    assert contents(archives["etcd"])[0] == "localhost/kokpit/etcd:3.6.8-0"
    assert contents(archives["coredns"])[0] == "localhost/kokpit/coredns:v1.14.7"


def test_an_archive_already_written_is_kept(tmp_path: Path) -> None:
    assets = fake_release(tmp_path / "v1.36.3")
    first = ensure_images(assets, progress=lambda _: None)
    stamps = {c: p.stat().st_mtime_ns for c, p in first.items()}
    said: list[str] = []
    again = ensure_images(assets, progress=said.append)
    assert {c: p.stat().st_mtime_ns for c, p in again.items()} == stamps
    assert said == []
