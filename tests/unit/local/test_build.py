import os
from pathlib import Path

import pytest

from kokpit.local import assets, build
from kokpit.local.assets import AssetsError
from kokpit.local.versions import Release

GOMOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgo.etcd.io/etcd/client/v3 v3.6.8
\tgo.etcd.io/etcd/server/v3 v3.6.8 // indirect
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/kube-aggregator => ./staging/src/k8s.io/kube-aggregator
\tk8s.io/cri-api => ./staging/src/k8s.io/cri-api
)
"""


def test_parse_gomod_finds_every_staging_module_and_etcd() -> None:
    staging, etcd = build.parse_kubernetes_gomod(GOMOD)
    assert staging == ["k8s.io/api", "k8s.io/kube-aggregator", "k8s.io/cri-api"]
    assert etcd == "v3.6.8"


def test_parse_gomod_rejects_a_gomod_without_staging() -> None:
    with pytest.raises(build.BuildError):
        build.parse_kubernetes_gomod("module x\n\ngo 1.26\n")


def test_version_ldflags_set_both_version_packages() -> None:
    flags = build.version_ldflags(Release("v1.35.4"))
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.4" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=35" in flags
    assert len(flags) == 8


def test_kwok_stages_follow_the_kustomizations(tmp_path: Path) -> None:
    for stage_set in build.KWOK_STAGE_SETS:
        d = tmp_path / stage_set
        d.mkdir(parents=True)
        name = stage_set.replace("/", "-")
        (d / "kustomization.yaml").write_text(f"resources:\n- {name}.yaml\n")
        (d / f"{name}.yaml").write_text(f"kind: Stage\nmetadata:\n  name: {name}\n")
    for extra in build.KWOK_EXTRA_STAGES:
        (tmp_path / extra).parent.mkdir(parents=True)
        (tmp_path / extra).write_text("kind: Stage\nmetadata:\n  name: chaos\n")
    text = build.collect_kwok_stages(tmp_path)
    assert text.count("kind: Stage") == len(build.KWOK_STAGE_SETS) + len(build.KWOK_EXTRA_STAGES)
    assert "name: pod-fast" in text
    assert "name: chaos" in text


def test_missing_go_says_what_is_needed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AssetsError) as e:
        build.require_go()
    assert "Go toolchain" in str(e.value)
    assert "KOKPIT_ASSETS" in str(e.value)


def test_old_go_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho go1.21.0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin:/bin")
    with pytest.raises(AssetsError, match=r"go1\.21\.0.*needs go >= 1\.26"):
        build.require_go()


def test_completing_a_build_adds_files_and_keeps_the_old_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOKPIT_CACHE", str(tmp_path))
    dest = tmp_path / "bin" / "v1.36.3"
    dest.mkdir(parents=True)
    for name in (*assets.CONTROL_PLANE_BINARIES, assets.KWOK_STAGES):
        (dest / name).write_text(name)
    assets.write_manifest(dest, {"kubernetes": "v1.36.3", "build_seconds": 480})
    out = tmp_path / "bin" / ".v1.36.3.partial"
    out.mkdir()
    for name in assets.NODE_BINARIES:
        (out / name).write_text(name)
    build._complete(dest, out, {"build_seconds": 30})
    manifest = assets.read_manifest(dest)
    assert manifest["build_seconds"] == 480
    assert manifest["completed"] == {"build_seconds": 30}
    assert not out.exists()
    assets.verify(dest)  # complete now: no IncompleteAssetsError
