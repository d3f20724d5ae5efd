"""What a benchmark's or test's business clusters leave behind is stopped: components of the
``process`` runtime run in sessions of their own, so an interrupted run (Ctrl-C stops the
Cluster-Operator with it, before it deletes its Clusters) would leave them running. A real
process, started and recorded as the runtime does."""

from __future__ import annotations

from pathlib import Path

from fixtures.business import stop_control_planes
from kokpit.local import process
from kokpit.local.components import Component, Health, Layout
from kokpit.local.supervisor import Supervisor


def test_every_component_left_under_the_runtime_root_is_stopped(tmp_path: Path) -> None:
    refs = []
    for cluster in ("uid-a", "uid-b"):
        supervisor = Supervisor(Layout(tmp_path / cluster))
        component = Component("kube-apiserver", ["/bin/sleep", "600"], Health("http://x/"))
        refs.append(supervisor.start(component))
    assert all(process.alive(ref) for ref in refs)
    stop_control_planes(tmp_path)
    assert not any(process.alive(ref) for ref in refs)
    stop_control_planes(tmp_path / "none")  # no runtime root at all: nothing to do
