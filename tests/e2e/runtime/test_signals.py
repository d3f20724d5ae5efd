"""An operator stopped by SIGTERM (what the kubelet sends a pod's containers): it stops at once
and, leading, releases its Lease, so a follower takes over without waiting the Lease out. Runs
``kokpit operator rollout`` as its own process under its RBAC (config/rbac)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kokpit.local import Kubectl, LocalCluster
from kokpit.runtime import Client, ClientConfig, NotFound
from kokpit.runtime.resources import LEASES
from tests.e2e.rbac import running_operator

pytestmark = pytest.mark.usefixtures("kokpit_crds")
LEASE = "kokpit-rollout-operator"


async def test_sigterm_stops_a_leading_operator_at_once_and_releases_its_lease(
    local_cluster: LocalCluster, kubectl: Kubectl, tmp_path: Path
) -> None:
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    async with (
        Client(admin) as client,
        running_operator("rollout", kubectl, admin, [], tmp_path, ["--leader-elect"]) as op,
    ):

        async def holder() -> str | None:
            try:
                lease = await client.get(LEASES, LEASE, namespace="kokpit-system")
            except NotFound:
                return None
            return (lease.get("spec") or {}).get("holderIdentity")

        identity = await op.wait(holder, "the operator to lead", 30)
        stopped = time.monotonic()
        code = op.terminate(within=10)
        took = time.monotonic() - stopped

    assert code == 0, f"exit code {code}"
    assert took < 5, f"{took:.1f} s to stop"
    async with Client(admin) as client:
        spec = (await client.get(LEASES, LEASE, namespace="kokpit-system"))["spec"]
    assert spec.get("holderIdentity") is None, f"{identity} still holds the Lease: {spec}"
    assert spec["leaseDurationSeconds"] == 1
    assert "released leadership" in op.log.read_text()
