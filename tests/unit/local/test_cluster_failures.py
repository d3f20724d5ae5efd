"""How ``up`` reports a component that fails, using stand-in binaries that misbehave.

No API server is involved: these tests are about process supervision and error messages.
"""

from pathlib import Path

import pytest

from kokpit.local import Assets, ComponentFailedError, LocalCluster, Settings
from kokpit.local.assets import BINARIES, KWOK_STAGES


def stand_in_assets(root: Path, etcd_script: str) -> Assets:
    root.mkdir()
    for name in (*BINARIES, KWOK_STAGES):
        (root / name).write_text("#!/bin/sh\nexec sleep 60\n")
        (root / name).chmod(0o755)
    (root / "etcd").write_text(f"#!/bin/sh\n{etcd_script}\n")
    return Assets(root, "v1.36.3")


def test_a_component_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    assets = stand_in_assets(
        tmp_path / "bin",
        'echo "starting etcd"; echo "listen tcp 127.0.0.1:2379: bind: address in use" >&2; exit 1',
    )
    cluster = LocalCluster(tmp_path / "data")
    with pytest.raises(ComponentFailedError) as e:
        cluster.up(assets, progress=lambda _: None)
    message = str(e.value)
    assert e.value.component == "etcd"
    assert "etcd exited during start" in message
    assert str(cluster.layout.log("etcd")) in message
    assert "bind: address in use" in message
    assert not cluster.status().components, "nothing is left recorded as running"


def test_a_component_that_never_gets_healthy_is_stopped(tmp_path: Path) -> None:
    assets = stand_in_assets(tmp_path / "bin", "echo waiting forever; exec sleep 60")
    cluster = LocalCluster(tmp_path / "data")
    with pytest.raises(ComponentFailedError, match=r"etcd did not become healthy within 1 s"):
        cluster.up(assets, settings=Settings(start_timeout_s=1.0), progress=lambda _: None)
    status = cluster.status()
    assert not status.running
    assert "waiting forever" in cluster.layout.log("etcd").read_text()
