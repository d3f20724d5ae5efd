import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kokpit.local.images import (
    ImageError,
    add_tree,
    image_digest,
    write_image,
    write_layered_image,
)


def blob(tar: tarfile.TarFile, digest: str) -> bytes:
    member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    assert member is not None
    return member.read()


def layout(archive: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bytes]:
    """The index, manifest, config and layer of an archive, each digest checked."""
    with tarfile.open(archive) as tar:
        oci = tar.extractfile("oci-layout")
        assert oci is not None
        assert json.load(oci) == {"imageLayoutVersion": "1.0.0"}
        index_file = tar.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
        [descriptor] = index["manifests"]
        manifest_bytes = blob(tar, descriptor["digest"])
        assert hashlib.sha256(manifest_bytes).hexdigest() == descriptor["digest"][7:]
        assert len(manifest_bytes) == descriptor["size"]
        manifest = json.loads(manifest_bytes)
        config_bytes = blob(tar, manifest["config"]["digest"])
        assert hashlib.sha256(config_bytes).hexdigest() == manifest["config"]["digest"][7:]
        [layer_descriptor] = manifest["layers"]
        layer = blob(tar, layer_descriptor["digest"])
        assert hashlib.sha256(layer).hexdigest() == layer_descriptor["digest"][7:]
        assert len(layer) == layer_descriptor["size"]
    return index, manifest, json.loads(config_bytes), layer


def test_an_image_holds_its_files_name_and_entrypoint(tmp_path: Path) -> None:
    binary = tmp_path / "etcd"
    binary.write_bytes(b"\x7fELF binary")
    binary.chmod(0o755)
    archive = write_image(
        tmp_path / "out" / "etcd.tar",
        name="kokpit.local/etcd:v3.6.8",
        files={"/usr/local/bin/etcd": binary, "/etc/etcd/conf": b"a=b\n"},
        entrypoint=["/usr/local/bin/etcd", "--name=x"],
    )
    index, manifest, config, layer = layout(archive)
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "kokpit.local/etcd:v3.6.8"
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/etcd", "--name=x"]
    assert config["config"]["User"] == "65532:65532"
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    layer_path = tmp_path / "layer.tar"
    layer_path.write_bytes(layer)
    with tarfile.open(layer_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        names = [m.name for m in tar.getmembers()]
        etcd = tar.extractfile("usr/local/bin/etcd")
        assert etcd is not None
        assert etcd.read() == b"\x7fELF binary"
    assert names == sorted(names)
    assert members["usr/local/bin/etcd"].mode == 0o755
    assert members["etc/etcd/conf"].mode == 0o644
    assert members["usr/local/bin"].isdir()
    assert members["etc"].isdir()
    assert members["tmp"].mode == 0o1777
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
    assert image_digest(archive) == index["manifests"][0]["digest"]


def test_the_same_files_give_the_same_archive(tmp_path: Path) -> None:
    def write(archive: Path) -> bytes:
        files: dict[str, Path | bytes] = {"/b": b"2", "/a/x": b"1"}
        written = write_image(archive, name="kokpit.local/x:1", files=files, entrypoint=["/b"])
        return written.read_bytes()

    first = write(tmp_path / "one.tar")
    (tmp_path / "later").mkdir()
    assert write(tmp_path / "later" / "two.tar") == first
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")], "no scratch left"


@pytest.mark.parametrize("name", ["pause", "pause:3", "kokpit.local/pause", "Kokpit.local/P:1"])
def test_a_name_must_be_fully_qualified_with_a_tag(tmp_path: Path, name: str) -> None:
    with pytest.raises(ImageError, match="fully qualified"):
        write_image(tmp_path / "x.tar", name=name, files={"/a": b""}, entrypoint=["/a"])
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.parametrize("path", ["relative", "/a/../../etc/passwd", "/"])
def test_image_paths_are_absolute_without_parent_steps(tmp_path: Path, path: str) -> None:
    with pytest.raises(ImageError, match="absolute"):
        write_image(
            tmp_path / "x.tar", name="kokpit.local/x:1", files={path: b""}, entrypoint=["/a"]
        )


def test_a_layered_image_stores_gzipped_trees_with_their_diff_ids(tmp_path: Path) -> None:
    base = tmp_path / "rootfs"
    (base / "usr" / "bin").mkdir(parents=True)
    (base / "usr" / "bin" / "python3").write_bytes(b"\x7fELF python")
    (base / "usr" / "bin" / "python3").chmod(0o755)
    (base / "usr" / "bin" / "python").symlink_to("python3")
    (base / "dev").mkdir()
    (base / "dev" / "null-ish").write_bytes(b"left out")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "kokpit").write_bytes(b"#!/opt/kokpit/venv/bin/python\n")
    os.link(venv / "bin" / "kokpit", venv / "bin" / "kokpit-again")

    def fill_base(tar: tarfile.TarFile) -> None:
        add_tree(tar, base, ".", skip=lambda name: name.startswith("./dev/"))

    archive = write_layered_image(
        tmp_path / "kokpit.tar",
        name="localhost/kokpit/kokpit:0.1.0",
        layers=[fill_base, lambda tar: add_tree(tar, venv, "opt/kokpit/venv")],
        entrypoint=["kokpit"],
        cmd=["--help"],
        env=["PATH=/opt/kokpit/venv/bin:/usr/bin"],
        labels={"org.opencontainers.image.version": "0.1.0"},
    )
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.loads(blob(tar, index["manifests"][0]["digest"]))
        config = json.loads(blob(tar, manifest["config"]["digest"]))
        stored = [blob(tar, layer["digest"]) for layer in manifest["layers"]]
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ] * 2
    assert [len(s) for s in stored] == [layer["size"] for layer in manifest["layers"]]
    plain = [gzip.decompress(s) for s in stored]
    assert config["rootfs"]["diff_ids"] == [
        f"sha256:{hashlib.sha256(p).hexdigest()}" for p in plain
    ]
    assert config["config"] == {
        "Entrypoint": ["kokpit"],
        "Cmd": ["--help"],
        "User": "65532:65532",
        "Env": ["PATH=/opt/kokpit/venv/bin:/usr/bin"],
        "WorkingDir": "/",
        "Labels": {"org.opencontainers.image.version": "0.1.0"},
    }
    with tarfile.open(fileobj=io.BytesIO(plain[0])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["./usr/bin/python"].issym()
    assert members["./usr/bin/python"].linkname == "python3"
    assert members["./usr/bin/python3"].mode == 0o755
    assert "./dev" in members
    assert "./dev/null-ish" not in members
    assert all(m.mtime == 0 and m.uname == "" for m in members.values())
    with tarfile.open(fileobj=io.BytesIO(plain[1])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["opt/kokpit/venv/bin/kokpit-again"].islnk()
    assert members["opt/kokpit/venv/bin/kokpit-again"].linkname == "opt/kokpit/venv/bin/kokpit"
    assert members["opt/kokpit/venv/bin/kokpit"].isfile()
