"""OCI image archives written from local files, so real nodes need no image registry.

A real node's containerd imports these archives (``ctr -n k8s.io images import``) and the
kubelet runs them with ``imagePullPolicy: Never``. An archive is a tar of an OCI image layout:
``oci-layout``, ``index.json`` (its one manifest annotated with ``io.containerd.image.name``,
the name containerd gives the image), and under ``blobs/sha256/`` the manifest, the config and
the layers: for :func:`write_image` one uncompressed layer holding the given files; for
:func:`write_layered_image` (kokpit's own image, :mod:`kokpit.local.kokpit_image`) several
gzip-compressed layers, each filled by a function (for example with :func:`add_tree`).

The output is deterministic (sorted entries, fixed mtimes, root-owned, no host user or group
names), so the same files give the same image digest, and an unchanged image need not be
imported again.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

#: The mtime of every entry (any fixed value gives reproducible digests; 0 is the epoch).
MTIME = 0
#: The search path of the images' processes.
PATH = "/usr/local/bin:/usr/bin:/bin"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
GZIP_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
#: gzip's own default: on kokpit's image, level 9 takes five times as long (35 s more on two
#: cores) for a 1 % smaller archive.
GZIP_LEVEL = 6
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
#: A fully qualified reference with a tag (``kokpit.local/etcd:v3.6.8``): the kubelet resolves
#: a short name such as ``etcd`` to ``docker.io/library/etcd:latest``, which would not match.
NAME = re.compile(
    r"^[a-z0-9][a-z0-9.-]*(:[0-9]+)?"  # the registry host (with a dot or a port, see below)
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)+"  # the repository's path
    r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # the tag
)
#: A file that starts like this is executable (a script or an ELF binary).
EXECUTABLE_MAGIC = (b"#!", b"\x7fELF")


class ImageError(ValueError):
    """The image cannot be written as asked; the message says why."""


def write_image(
    archive: Path,
    *,
    name: str,
    files: Mapping[str, Path | bytes],
    entrypoint: Sequence[str],
    user: str = "65532:65532",
) -> Path:
    """Write an OCI image archive of ``files`` to ``archive`` and return its path.

    ``files`` maps absolute paths in the image to a local file (its mode's executable bit is
    kept) or to bytes (executable when they start with ``#!`` or an ELF header). Parent
    directories are created (0755), and ``/tmp`` (1777). ``name`` is a fully qualified
    reference with a tag, e.g. ``kokpit.local/pause:3``. The archive appears whole or not at
    all (written beside it, then renamed), so a directory of archives can be read at any time.
    """
    entries = {_image_path(path): content for path, content in files.items()}
    return write_layered_image(
        archive,
        name=name,
        layers=[lambda tar: _fill_layer(tar, entries)],
        entrypoint=entrypoint,
        user=user,
        compress=False,
    )


#: Fills one layer's tar (entries in a stable order, see :func:`add_tree`).
Layer = Callable[[tarfile.TarFile], None]


def write_layered_image(
    archive: Path,
    *,
    name: str,
    layers: Sequence[Layer],
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    user: str = "65532:65532",
    env: Sequence[str] = (f"PATH={PATH}",),
    working_dir: str = "/",
    labels: Mapping[str, str] | None = None,
    compress: bool = True,
) -> Path:
    """Write an OCI image archive of ``layers`` (lowest first) to ``archive``: each layer is
    a function that adds its entries to a tar. ``compress`` stores the layers gzipped (at a
    fixed gzip mtime, so still reproducible); the config's ``diff_ids`` are the uncompressed
    tars' digests, as the image spec asks. The archive appears whole or not at all."""
    if not _valid_name(name):
        raise ImageError(
            f"image name {name!r} must be a fully qualified reference with a tag, "
            "like kokpit.local/etcd:v3.6.8"
        )
    if not entrypoint:
        raise ImageError("an image needs an entrypoint")
    if not layers:
        raise ImageError("an image needs a layer")
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".image-") as scratch:
        written = [
            _write_layer(Path(scratch) / f"layer-{i}.tar", fill, compress)
            for i, fill in enumerate(layers)
        ]
        image_config: dict[str, object] = {
            "Entrypoint": list(entrypoint),
            "User": user,
            "Env": list(env),
            "WorkingDir": working_dir,
        }
        if cmd:
            image_config["Cmd"] = list(cmd)
        if labels:
            image_config["Labels"] = dict(labels)
        config = _json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": image_config,
                "rootfs": {"type": "layers", "diff_ids": [w.diff_id for w in written]},
                "history": [
                    {"created_by": "kokpit.local.images", "created": _created()} for _ in written
                ],
                "created": _created(),
            }
        )
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": _descriptor(CONFIG_MEDIA_TYPE, config),
                "layers": [
                    {"mediaType": w.media_type, "digest": w.digest, "size": w.size} for w in written
                ],
            }
        )
        index = _json(
            {
                "schemaVersion": 2,
                "mediaType": INDEX_MEDIA_TYPE,
                "manifests": [
                    {
                        **_descriptor(MANIFEST_MEDIA_TYPE, manifest),
                        "annotations": {
                            "io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                        },
                    }
                ],
            }
        )
        partial = Path(scratch) / "image.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "blobs", None, 0o755)
            _add_bytes(tar, "blobs/sha256", None, 0o755)
            blobs: dict[str, bytes | _WrittenLayer] = {
                _hex(config): config,
                _hex(manifest): manifest,
            }
            blobs.update({w.digest.removeprefix("sha256:"): w for w in written})
            for digest in sorted(blobs):
                content = blobs[digest]
                if isinstance(content, _WrittenLayer):
                    with content.path.open("rb") as f:
                        _add_file(tar, f"blobs/sha256/{digest}", f, content.size, 0o644)
                else:
                    _add_bytes(tar, f"blobs/sha256/{digest}", content, 0o644)
            _add_bytes(tar, "index.json", index, 0o644)
            _add_bytes(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644)
        partial.rename(archive)
    return archive


def add_tree(
    tar: tarfile.TarFile,
    source: Path,
    arcname: str,
    *,
    skip: Callable[[str], bool] = lambda _: False,
) -> None:
    """Add the directory tree ``source`` as ``arcname`` (``opt/kokpit``), in sorted order,
    keeping modes, owners (as numbers), symlinks and hard links, with fixed mtimes and no
    owner names: the same tree gives the same layer. ``skip(path)`` leaves an entry (and, for
    a directory, all under it) out."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if skip(info.name):
            return None
        info.mtime = MTIME
        info.uname = info.gname = ""
        return info

    tar.add(source, arcname=arcname, recursive=True, filter=normalise)


def image_digest(archive: Path) -> str:
    """The manifest digest an archive's index points at (what a node reports as imageID)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ImageError(f"{archive} has no index.json")
        index: dict[str, Any] = json.load(member)
    digest: str = index["manifests"][0]["digest"]
    return digest


def unpacked_size(archive: Path) -> int:
    """The sum of the archive's layers' uncompressed sizes (what a node unpacks)."""
    total = 0
    with tarfile.open(archive) as tar:
        index: dict[str, Any] = json.load(_member(tar, "index.json", archive))
        digest = index["manifests"][0]["digest"]
        manifest: dict[str, Any] = json.load(_member(tar, _blob_path(digest), archive))
        for layer in manifest["layers"]:
            stored = _member(tar, _blob_path(layer["digest"]), archive)
            plain: IO[bytes] | gzip.GzipFile = (
                gzip.GzipFile(fileobj=stored)
                if layer["mediaType"] == GZIP_LAYER_MEDIA_TYPE
                else stored
            )
            while chunk := plain.read(1 << 20):
                total += len(chunk)
    return total


def _blob_path(digest: str) -> str:
    return f"blobs/sha256/{digest.removeprefix('sha256:')}"


def _member(tar: tarfile.TarFile, name: str, archive: Path) -> IO[bytes]:
    member = tar.extractfile(name)
    if member is None:
        raise ImageError(f"{archive} has no file {name}")
    return member


def _valid_name(name: str) -> bool:
    host = name.split("/", 1)[0]
    return bool(NAME.match(name)) and ("." in host or ":" in host or host == "localhost")


def _image_path(path: str) -> str:
    """``/usr/bin/etcd`` → ``usr/bin/etcd``; refuses relative paths and ``..``."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts or pure == PurePosixPath("/"):
        raise ImageError(f"image path {path!r} must be absolute, without '..'")
    return str(pure.relative_to("/"))


@dataclass(frozen=True)
class _WrittenLayer:
    path: Path
    media_type: str
    digest: str  # of the blob as stored (compressed or not)
    size: int
    diff_id: str  # of the uncompressed tar


class _Digesting(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``out``."""

    def __init__(self, out: Callable[[bytes], object]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.sha256.update(chunk)
        self.size += len(chunk)
        self.out(chunk)
        return len(chunk)


def _write_layer(path: Path, fill: Layer, compress: bool) -> _WrittenLayer:
    with path.open("wb") as f:
        stored = _Digesting(f.write)
        if compress:
            with gzip.GzipFile(
                fileobj=stored, mode="wb", mtime=0, compresslevel=GZIP_LEVEL
            ) as zipped:
                plain = _Digesting(zipped.write)
                with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    fill(tar)
        else:
            plain = stored
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
    return _WrittenLayer(
        path=path,
        media_type=GZIP_LAYER_MEDIA_TYPE if compress else LAYER_MEDIA_TYPE,
        digest=f"sha256:{stored.sha256.hexdigest()}",
        size=stored.size,
        diff_id=f"sha256:{plain.sha256.hexdigest()}",
    )


def _fill_layer(tar: tarfile.TarFile, entries: Mapping[str, Path | bytes]) -> None:
    directories = {"tmp"}
    for path in entries:
        parents = PurePosixPath(path).parents
        directories.update(str(p) for p in parents if str(p) != ".")
    overlap = directories & entries.keys()
    if overlap:
        raise ImageError(f"{sorted(overlap)[0]!r} is both a file and a directory of the image")
    for path in sorted(directories | entries.keys()):
        content = entries.get(path)
        if content is None:
            _add_bytes(tar, path, None, 0o1777 if path == "tmp" else 0o755)
        elif isinstance(content, Path):
            mode = 0o755 if os.stat(content).st_mode & 0o111 else 0o644
            with content.open("rb") as src:
                _add_file(tar, path, src, os.fstat(src.fileno()).st_size, mode)
        else:
            mode = 0o755 if content.startswith(EXECUTABLE_MAGIC) else 0o644
            _add_bytes(tar, path, content, mode)


def _tarinfo(path: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes | None, mode: int) -> None:
    info = _tarinfo(path, mode)
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, path: str, src: IO[bytes], size: int, mode: int) -> None:
    info = _tarinfo(path, mode)
    info.size = size
    tar.addfile(info, src)


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{_hex(data)}", "size": len(data)}


def _created() -> str:
    return "1970-01-01T00:00:00Z"
