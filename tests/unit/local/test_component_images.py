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


def fake_release(root: Path, version: str = "v1.36.3", etcd: str = "v3.6.8") -> Assets:
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"etcd": etcd, "coredns": "v1.14.7"}))
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "coredns"):
        (root / name).write_bytes(b"\x7fELF" + name.encode() + version.encode())
        (root / name).chmod(0o755)
    return Assets(root, version)


def by_name(archives: list[Path]) -> dict[str, Path]:
    return {contents(a)[0]: a for a in archives}


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
    older = fake_release(tmp_path / "v1.35.4", "v1.35.4", "v3.6.5")
    archives = by_name(ensure_images(assets, progress=lambda _: None, others=[older]))
    runtime = KubernetesRuntime(
        Client(ClientConfig("https://unused.invalid")),
        KubernetesRuntimeOptions(image_repository=REPOSITORY),
    )
    cp = ControlPlane("ns", "biz", "uid")
    for release, etcd in ((assets, "v3.6.8"), (older, "v3.6.5")):
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            version = etcd if component == "etcd" else release.kubernetes_version
            _, obj = runtime._workload(cp, ComponentPlan(component, version))
            container = obj["spec"]["template"]["spec"]["containers"][0]
            archive = archives[container["image"]]
            _, members, files = contents(archive)
            assert archive.parent == assets.images, "all imported with the meta-cluster's"
            binary = f"usr/local/bin/{component}"
            assert files[binary] == (release.root / component).read_bytes()
            assert members[binary].mode & 0o111
            assert b"nonroot:x:65532:65532:" in files["etc/passwd"]
            assert set(files) == {binary, "etc/passwd", "etc/group"}, "nothing but the binary"
            assert (release.images / archive.name).samefile(archive), "its own, linked"
    assert "localhost/kokpit/etcd:3.6.8-0" in archives
    assert "localhost/kokpit/coredns:v1.14.7" in archives


def test_an_archive_already_written_is_kept(tmp_path: Path) -> None:
    assets = fake_release(tmp_path / "v1.36.3")
    first = ensure_images(assets, progress=lambda _: None, others=[])
    stamps = {p: p.stat().st_mtime_ns for p in first}
    said: list[str] = []
    again = ensure_images(assets, progress=said.append, others=[])
    assert {p: p.stat().st_mtime_ns for p in again} == stamps
    assert said == []
