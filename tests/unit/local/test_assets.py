from pathlib import Path

import pytest

from kokpit.local import assets
from kokpit.local.versions import Release

RELEASE = Release("v1.36.3")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KOKPIT_CACHE", str(tmp_path))
    monkeypatch.delenv("KOKPIT_ASSETS", raising=False)
    return tmp_path


def fake_build(directory: Path, binaries: tuple[str, ...] = assets.BINARIES) -> None:
    directory.mkdir(parents=True)
    for name in (*binaries, assets.KWOK_STAGES):
        (directory / name).write_bytes(f"contents of {name}".encode() * 100)
    assets.write_manifest(directory, {"kubernetes": RELEASE.version})


def test_a_complete_build_is_found(cache: Path) -> None:
    fake_build(assets.release_dir(RELEASE))
    found = assets.find(RELEASE)
    assert found is not None
    assert found.bin("kube-apiserver") == assets.release_dir(RELEASE) / "kube-apiserver"


def test_nothing_cached_means_build(cache: Path) -> None:
    assert assets.find(RELEASE) is None


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: (d / assets.MANIFEST).unlink(), id="no-manifest"),
        pytest.param(lambda d: (d / "etcd").unlink(), id="missing-binary"),
        pytest.param(lambda d: (d / "kwok").write_bytes(b"truncated"), id="truncated"),
        pytest.param(
            lambda d: (d / "kube-scheduler").write_bytes(
                (d / "kube-scheduler").read_bytes().replace(b"c", b"x")
            ),
            id="same-size-corruption",
        ),
        pytest.param(lambda d: (d / assets.MANIFEST).write_text("{"), id="bad-manifest"),
    ],
)
def test_a_damaged_build_is_discarded_never_used(cache: Path, damage) -> None:  # type: ignore[no-untyped-def]
    directory = assets.release_dir(RELEASE)
    fake_build(directory)
    damage(directory)
    assert assets.find(RELEASE) is None
    assert not directory.exists(), "the damaged build must be moved out of the way"


def test_a_build_from_before_the_node_binaries_is_kept_for_completion(cache: Path) -> None:
    directory = assets.release_dir(RELEASE)
    fake_build(directory, assets.CONTROL_PLANE_BINARIES)
    assert assets.find(RELEASE) is None, "an incomplete build is not usable as it is"
    assert directory.is_dir(), "a sound control plane must not be thrown away"
    assert assets.missing(RELEASE) == assets.NODE_BINARIES


def test_a_complete_build_misses_nothing_and_a_damaged_one_cannot_be_completed(
    cache: Path,
) -> None:
    directory = assets.release_dir(RELEASE)
    assert assets.missing(RELEASE) is None
    fake_build(directory)
    assert assets.missing(RELEASE) == ()
    (directory / "kubelet").write_bytes(b"truncated")
    assert assets.missing(RELEASE) is None


def test_override_lists_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etcd").write_text("")
    monkeypatch.setenv("KOKPIT_ASSETS", str(tmp_path))
    with pytest.raises(assets.AssetsError) as e:
        assets.find(RELEASE)
    message = str(e.value)
    assert "kube-apiserver" in message
    assert assets.KWOK_STAGES in message
    assert "etcd," not in message.split("lacks")[1].split(";")[0]


def test_override_with_every_binary_is_used_as_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*assets.BINARIES, assets.KWOK_STAGES):
        (tmp_path / name).write_text("#!/bin/sh\necho Kubernetes v1.36.3\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("KOKPIT_ASSETS", str(tmp_path))
    found = assets.find(RELEASE)
    assert found is not None
    assert found.root == tmp_path
    assert found.kubernetes_version == "v1.36.3"
