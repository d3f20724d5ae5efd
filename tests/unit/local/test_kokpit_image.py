"""The pieces of kokpit's own image that need no mirror: what is stripped from the Debian
tree, the user, the hook's quoting and the CLI's refusals. The whole build is in
tests/e2e/test_kokpit_image.py."""

import os
import shlex
from pathlib import Path

import pytest

from kokpit.cli.main import main
from kokpit.local import kokpit_image
from kokpit.local.images import write_layered_image

STATUS = """Package: dpkg
Status: install ok installed
Essential: yes

Package: python3.11
Status: install ok installed
Depends: libc6

Package: perl-base
Status: install ok installed
"""


def debian_tree(root: Path) -> Path:
    """A merged-/usr tree whose dpkg file lists name ``/lib`` as a directory, as Debian's do."""
    (root / "usr/lib/dpkg").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    for name in ("dpkg", "perl", "python3.11"):
        (root / "usr/bin" / name).write_bytes(b"\x7fELF")
    (root / "usr/lib/dpkg/methods").write_text("x")
    (root / "usr/bin/dpkg-query").symlink_to("dpkg")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "dpkg.list").write_text(
        "/.\n/lib\n/lib/dpkg\n/lib/dpkg/methods\n/usr/bin/dpkg\n/usr/bin/dpkg-query\n"
    )
    (info / "perl-base.list").write_text("/.\n/usr\n/usr/bin\n/usr/bin/perl\n")
    (info / "python3.11.list").write_text("/usr/bin/python3.11\n")
    (root / "var/lib/dpkg/status").write_text(STATUS)
    (root / "var/lib/dpkg/available").write_text("")
    (root / "etc/dpkg").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


def test_stripping_deletes_the_package_managers_files_and_keeps_shared_links(
    tmp_path: Path,
) -> None:
    root = debian_tree(tmp_path / "rootfs")
    removed = kokpit_image.strip(root, ("dpkg", "perl-base"))
    assert sorted(removed) == [
        "/lib/dpkg/methods",
        "/usr/bin/dpkg",
        "/usr/bin/dpkg-query",
        "/usr/bin/perl",
    ]
    assert (root / "lib").is_symlink(), "a directory a list names is never removed"
    assert (root / "usr/bin").is_dir()
    assert (root / "usr/bin/python3.11").is_file()
    assert sorted(os.listdir(root / "var/lib/dpkg")) == ["status"]
    status = (root / "var/lib/dpkg/status").read_text()
    assert status == "Package: python3.11\nStatus: install ok installed\nDepends: libc6\n"
    assert not (root / "etc/dpkg").exists()


def test_the_user_65532_is_added_once_with_its_home(tmp_path: Path) -> None:
    root = debian_tree(tmp_path / "rootfs")
    kokpit_image.add_user(root)
    kokpit_image.add_user(root)
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert passwd[1:] == ["nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin"]
    assert (root / "etc/group").read_text().splitlines()[1:] == ["nonroot:x:65532:"]
    home = (root / "home/nonroot").stat()
    assert (home.st_uid, home.st_gid) == (65532, 65532)


def test_the_hook_quotes_the_wheels_directory(tmp_path: Path) -> None:
    wheels = tmp_path / "a dir; rm -rf x"
    wheels.mkdir()
    (wheels / "kokpit-0.1.0-py3-none-any.whl").write_bytes(b"")
    hook = kokpit_image.customize_hook(wheels)
    assert f'cp -r {shlex.quote(str(wheels))} "$1/tmp/wheels"' in hook.splitlines()
    assert "--require-hashes" in hook
    assert "/tmp/wheels/kokpit-0.1.0-py3-none-any.whl" in hook
    assert hook.splitlines()[-1].startswith('chroot "$1" dpkg --purge python3-venv')


def test_the_labels_are_the_oci_annotations() -> None:
    labels = kokpit_image.Labels(version="0.1.0", revision="abc", source="https://x.example/k")
    assert {k: v for k, v in labels.as_dict().items() if k.endswith(("version", "revision"))} == {
        "org.opencontainers.image.version": "0.1.0",
        "org.opencontainers.image.revision": "abc",
    }
    assert labels.as_dict()["org.opencontainers.image.source"] == "https://x.example/k"
    assert kokpit_image.image_name("0.1.0") == "localhost/kokpit/kokpit:0.1.0"


def test_loading_something_that_is_no_image_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_an_image = tmp_path / "x.tar"
    not_an_image.write_text("hello")
    assert main(["local", "--data-dir", str(tmp_path), "load", str(not_an_image)]) == 1
    err = capsys.readouterr().err
    assert "is not an OCI image archive" in err
    assert "Traceback" not in err


def test_loading_without_a_running_real_node_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = write_layered_image(
        tmp_path / "i.tar",
        name="localhost/kokpit/x:1",
        layers=[lambda tar: None],
        entrypoint=["/x"],
    )
    assert main(["local", "--data-dir", str(tmp_path / "d"), "load", str(archive)]) == 3
    assert "no real node" in capsys.readouterr().err
