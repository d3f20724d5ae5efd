"""kokpit's image built on this machine as a person builds it (``kokpit local image``, which
``make image`` runs): from the Debian mirror and PyPI, a real OCI archive, checked blob by
blob, then unpacked and run as the user 65532 in a ``chroot`` — as a node would run it, less
the namespaces. Slow (a few minutes: a Debian bootstrap) and needs root."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kokpit.local import kokpit_image
from tests.e2e.support import IMAGE_REVISION, IMAGE_SOURCE

# In the real-node session, which builds the image once for this module and test_in_cluster.
pytestmark = [pytest.mark.slow, pytest.mark.real_node]

LABELS = {
    "org.opencontainers.image.title": "kokpit",
    "org.opencontainers.image.version": kokpit_image.installed_version(),
    "org.opencontainers.image.revision": IMAGE_REVISION,
    "org.opencontainers.image.source": IMAGE_SOURCE,
    "org.opencontainers.image.licenses": "Apache-2.0",
}
#: Nothing that installs or builds software is left in the image.
ABSENT = (
    "usr/bin/dpkg",
    "usr/bin/dpkg-query",
    "usr/bin/apt",
    "usr/bin/apt-get",
    "usr/bin/perl",
    "usr/bin/gcc",
    "usr/bin/cc",
    "usr/bin/make",
    "usr/bin/pip3",
    "usr/lib/python3/dist-packages/pip",
    "usr/share/python-wheels",
    "opt/kokpit/venv/bin/pip",
    "opt/kokpit/venv/lib/python3.11/site-packages/pip",
    "var/lib/dpkg/info",
)
#: kokpit's native dependencies, each loaded against the image's own libc and OpenSSL.
SMOKE = """
import aiohttp, asyncssh, orjson, sushy, yaml
from cryptography.hazmat.primitives.asymmetric import ec
import kokpit.cli.main, kokpit.cli.operator
assert yaml.__with_libyaml__
ec.generate_private_key(ec.SECP256R1())
print(orjson.dumps({"ok": True}).decode())
"""


@pytest.fixture(scope="module")
def archive(kokpit_image: Path) -> Path:
    return kokpit_image


def read_layout(archive: Path, into: Path) -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
    """The manifest and config of ``archive``, every blob's digest and size checked against
    the descriptor that names it; the layers' blobs are left in ``into``."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    assert json.loads((into / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    def blob(descriptor: dict[str, Any]) -> Path:
        path: Path = into / "blobs/sha256" / descriptor["digest"].removeprefix("sha256:")
        data = path.read_bytes()
        assert f"sha256:{hashlib.sha256(data).hexdigest()}" == descriptor["digest"]
        assert len(data) == descriptor["size"]
        return path

    [entry] = json.loads((into / "index.json").read_text())["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == kokpit_image.image_name(
        LABELS["org.opencontainers.image.version"]
    )
    manifest = json.loads(blob(entry).read_text())
    config = json.loads(blob(manifest["config"]).read_text())
    layers = [blob(layer) for layer in manifest["layers"]]
    return manifest, config, layers


def test_the_image_is_a_valid_oci_archive_that_runs_kokpit_as_65532(
    archive: Path, tmp_path: Path
) -> None:
    manifest, config, layers = read_layout(archive, tmp_path / "layout")
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+gzip"
    ] * 2
    assert config["config"]["Entrypoint"] == ["kokpit"]
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Env"][0].startswith("PATH=/opt/kokpit/venv/bin:")
    assert config["config"]["Labels"].items() >= LABELS.items()
    assert (config["os"], config["architecture"]) == ("linux", "amd64")

    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    for layer, diff_id in zip(layers, config["rootfs"]["diff_ids"], strict=True):
        plain = subprocess.run(["gzip", "-dc", str(layer)], capture_output=True, check=True)
        assert f"sha256:{hashlib.sha256(plain.stdout).hexdigest()}" == diff_id
        subprocess.run(
            ["tar", "-x", "--numeric-owner", "-C", str(rootfs)], input=plain.stdout, check=True
        )
    with tarfile.open(layers[1]) as tar:
        assert {m.name.split("/")[:2] == ["opt", "kokpit"] for m in tar.getmembers()} == {True}

    present = [path for path in ABSENT if os.path.lexists(rootfs / path)]
    assert present == []
    assert (rootfs / "lib").is_symlink()
    assert (rootfs / "usr/lib/x86_64-linux-gnu").is_dir()
    assert "nonroot:x:65532:65532:" in (rootfs / "etc/passwd").read_text()
    assert "Package: python3.11\n" in (rootfs / "var/lib/dpkg/status").read_text()
    assert "Package: dpkg\n" not in (rootfs / "var/lib/dpkg/status").read_text()

    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/usr/sbin/chroot", "--userspec=65532:65532", str(rootfs), *command],
            env={e.split("=", 1)[0]: e.split("=", 1)[1] for e in config["config"]["Env"]}
            | {"HOME": "/home/nonroot"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    helped = run(*config["config"]["Entrypoint"], *config["config"]["Cmd"])
    assert helped.returncode == 0, helped.stderr
    assert "operator" in helped.stdout
    operators = run("kokpit", "operator", "--help")
    assert operators.returncode == 0, operators.stderr
    assert "rollout" in operators.stdout
    smoke = run("python", "-c", SMOKE)
    assert (smoke.returncode, smoke.stdout) == (0, '{"ok":true}\n'), smoke.stderr
    whoami = run("python", "-c", "import os; print(os.getuid(), os.access('/home/nonroot', 2))")
    assert whoami.stdout == "65532 True\n"
