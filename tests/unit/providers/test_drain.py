"""Which pods a drain moves and which it leaves (shared by the Machine-Operator's delete and
the Remediation workflow)."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.providers.machine.drain import stays

Object = dict[str, Any]


def pod(phase: str = "Running", **meta: Any) -> Object:
    return {"metadata": {"name": "p", "namespace": "apps", **meta}, "status": {"phase": phase}}


def test_running_pods_leave_and_daemonset_and_mirror_pods_stay() -> None:
    assert not stays(pod())
    assert stays(pod(ownerReferences=[{"kind": "DaemonSet", "name": "agent"}]))
    assert stays(pod(annotations={"kubernetes.io/config.mirror": "x"}))


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_pod_stays_unless_it_is_being_deleted(phase: str) -> None:
    assert stays(pod(phase))
    # Evicted, exited on SIGTERM, not yet removed by its kubelet: the drain waits for it.
    assert not stays(pod(phase, deletionTimestamp="2026-11-27T15:41:05Z"))
