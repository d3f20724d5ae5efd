"""A cluster upgrade rolled out across five real business control planes (``process``
runtime): the Cluster-Operator and the Rollout-Operator run as processes of their own under
their RBAC. The canary's post-check fails (its new kube-apiserver does not start), its keeper
rolls it back, and the rollout aborts: no other cluster is touched."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.business import stop_control_planes
from kokpit.api.v1alpha1 import CLUSTER_PACKAGE_VERSIONS, CLUSTERS, ROLLOUTS
from kokpit.api.v1alpha1.rollout import CHANGE_ANNOTATION
from kokpit.local import Kubectl, LocalCluster
from kokpit.local.versions import Release
from kokpit.providers.controlplane.releases import cluster_package
from kokpit.runtime import Client, ClientConfig
from tests.e2e.rbac import running_operator
from tests.e2e.support import condition, until

pytestmark = pytest.mark.usefixtures("kokpit_crds")
Object = dict[str, Any]
CLUSTER_COUNT = 5
ROLLOUT_ARGS = ("--poll-interval", "1")


@pytest.fixture
async def operators(
    local_cluster: LocalCluster, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> AsyncIterator[None]:
    """The Cluster-Operator (process runtime) and the Rollout-Operator, as processes."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    root = tmp_path / "cp"
    cluster_args = ["--runtimes", "process", "--process-root", str(root)]
    try:
        async with (
            running_operator("cluster", kubectl, admin, [namespace], tmp_path, cluster_args),
            running_operator(
                "rollout", kubectl, admin, [namespace], tmp_path, ["--poll-interval", "1"]
            ),
        ):
            yield
    finally:
        stop_control_planes(root)  # no control plane outlives the test


def running(obj: Object, version: str) -> bool:
    status = obj.get("status") or {}
    return (
        status.get("kubernetesVersion") == version
        and (condition(obj, "Ready") or {}).get("status") == "True"
    )


@pytest.mark.slow  # about 2 minutes: five control planes start on two cores
async def test_a_cluster_rollout_stops_and_rolls_back_when_the_canary_fails_its_post_check(
    client: Client, namespace: str, operators: None
) -> None:
    tag = secrets.token_hex(3)
    old, broken = f"old-{tag}", f"broken-{tag}"
    await client.create(CLUSTER_PACKAGE_VERSIONS, cluster_package(old, Release("v1.35.4")))
    await client.create(
        CLUSTER_PACKAGE_VERSIONS,
        cluster_package(
            broken, Release("v1.36.3"), apiserver_flags={"no-such-flag": "x"}, deadline_seconds=15
        ),
    )
    names = [f"c-{i}" for i in range(CLUSTER_COUNT)]
    for name in names:
        await client.create(
            CLUSTERS,
            {
                "apiVersion": "kokpit.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": name, "namespace": namespace, "labels": {"tier": "gold"}},
                "spec": {"packageVersion": old, "runtime": "process"},
            },
        )

    async def all_running() -> bool:
        items = (await client.list(CLUSTERS, namespace=namespace)).items
        return len(items) == CLUSTER_COUNT and all(running(c, "v1.35.4") for c in items)

    await until("five control planes running v1.35.4", all_running, 300, every=1)

    await client.create(
        ROLLOUTS,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "upgrade", "namespace": namespace},
            "spec": {
                "target": {
                    "kind": "Cluster",
                    "selector": {"matchLabels": {"tier": "gold"}},
                    "packageVersion": broken,
                },
                "batches": [{"size": "1"}, {"size": "2"}, {"size": "100%"}],
                "healthCheck": {"timeoutSeconds": 180},
            },
        },
    )

    async def aborted() -> Object | None:
        obj = await client.get(ROLLOUTS, "upgrade", namespace=namespace)
        return obj if (obj.get("status") or {}).get("phase") == "Aborted" else None

    done = await until("the rollout to abort", aborted, 240, every=1)
    assert "c-0" in done["status"]["abortReason"]
    assert "rolled back" in done["status"]["abortReason"]
    assert (condition(done, "RolledBack") or {}).get("status") == "True"

    clusters = {
        c["metadata"]["name"]: c for c in (await client.list(CLUSTERS, namespace=namespace)).items
    }
    canary = clusters["c-0"]
    assert canary["spec"]["packageVersion"] == old, "the rollout set the canary back"
    assert canary["status"]["failedPackageVersion"] == broken
    assert running(canary, "v1.35.4")
    assert CHANGE_ANNOTATION in canary["metadata"]["annotations"]
    for name in names[1:]:
        other = clusters[name]
        assert CHANGE_ANNOTATION not in (other["metadata"].get("annotations") or {}), name
        assert other["metadata"]["generation"] == 1, f"{name} was touched"
        assert running(other, "v1.35.4"), name
