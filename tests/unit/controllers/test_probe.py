"""The pod-creation probe's logic without a cluster: the pod it makes, which Clusters it
probes, its schedule (one probe per cluster at a time, gone clusters forgotten), and that
nothing a cluster does (unreachable, no kubeconfig, a bug) escapes as anything but a counted
failure. Probes of real clusters: tests/e2e/controllers/test_probe.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kokpit.controllers.cluster import access
from kokpit.controllers.probe import PROBE_LABEL, PROBE_NAMESPACE, PodProbe, ProbeOptions
from kokpit.controllers.probe.pod import probe_pod, probed
from kokpit.pki import MACHINE_OPERATOR
from kokpit.runtime import ClusterAccessor, ClusterNotReady, ClusterUnreachable
from kokpit.runtime.metrics import REGISTRY
from kokpit.runtime.store import Store

Object = dict[str, Any]


def a_cluster(
    name: str, *, endpoint: str | None = "https://x:6443", deleting: bool = False
) -> Object:
    meta: Object = {"namespace": "fleet", "name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"endpoint": endpoint} if endpoint else {}
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Cluster",
        "metadata": meta,
        "status": status,
    }


def test_the_probe_pod_asks_for_as_little_as_a_pod_can() -> None:
    pod = probe_pod(ProbeOptions(image="pause:test", active_deadline_seconds=45))
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["namespace"] == PROBE_NAMESPACE == "kokpit-probe"
    assert meta["labels"][PROBE_LABEL] == "true"
    assert "name" not in meta  # generated: a leftover never blocks the next probe
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 45
    assert spec["tolerations"] == [{"operator": "Exists"}]  # every taint
    (container,) = spec["containers"]
    assert container["image"] == "pause:test"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(
    ("cluster", "wanted"),
    [
        (a_cluster("up"), True),
        (a_cluster("new", endpoint=None), False),  # no control plane yet
        (a_cluster("going", deleting=True), False),
    ],
)
def test_which_clusters_are_probed(cluster: Object, wanted: bool) -> None:
    assert probed(cluster) is wanted


def test_kokpits_identity_may_run_pods_in_the_probe_namespace_only() -> None:
    """The Cluster-Operator makes the namespace before the Role in it, and grants pods there
    to kokpit's user; no ClusterRole of kokpit's grants pods create or namespaces."""
    objects = access.rbac()
    kinds = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    namespace = kinds.index(("Namespace", None, PROBE_NAMESPACE))
    role = kinds.index(("Role", PROBE_NAMESPACE, access.ROLE_NAME))
    binding = kinds.index(("RoleBinding", PROBE_NAMESPACE, access.ROLE_NAME))
    assert namespace < role < binding
    assert objects[binding]["subjects"][0]["name"] == MACHINE_OPERATOR.user
    assert objects[role]["rules"] == access.PROBE_RULES
    for o in objects:
        if o["kind"] == "ClusterRole" and o["metadata"]["name"] == access.ROLE_NAME:
            for rule in o["rules"]:
                assert "namespaces" not in rule["resources"]
                if "pods" in rule["resources"]:
                    assert "create" not in rule["verbs"]
    assert {o["kind"] for o in objects} <= set(access.RESOURCES)


# -- the schedule and the failures, with stand-ins for the Cluster informer and the cache ---


class Clusters:
    def __init__(self, *clusters: Object) -> None:
        self.store = Store()
        self.synced = asyncio.Event()
        for c in clusters:
            self.store.upsert(c)
        self.synced.set()


class Cache:
    """Answers each cluster with an error (what the ClusterCache raises), or blocks."""

    def __init__(self, answers: dict[str, BaseException | asyncio.Event]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def get(self, cluster_key: str) -> ClusterAccessor:
        self.asked.append(cluster_key)
        answer = self.answers[cluster_key]
        if isinstance(answer, asyncio.Event):
            await answer.wait()
            raise ClusterUnreachable("released")
        raise answer


def sample(cluster: str, result: str, reason: str) -> float | None:
    labels = {"namespace": "fleet", "cluster": cluster, "result": result, "reason": reason}
    return REGISTRY.get_sample_value("kokpit_probe_pod_creations_total", labels)


def count(cluster: str, result: str, reason: str) -> float:
    return sample(cluster, result, reason) or 0.0


async def settle(probe: PodProbe) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_clusters_that_cannot_be_used_are_counted_failures_with_their_reason() -> None:
    cache = Cache(
        {
            "fleet/down": ClusterUnreachable("Cluster fleet/down's API server does not answer"),
            "fleet/nokey": ClusterNotReady("Cluster nokey's kubeconfig Secret does not exist"),
            "fleet/bug": RuntimeError("a bug"),
        }
    )
    clusters = Clusters(a_cluster("down"), a_cluster("nokey"), a_cluster("bug"))
    before = {
        name: count(name, "failure", reason)
        for name, reason in (("down", "Unreachable"), ("nokey", "NotConnected"), ("bug", "Error"))
    }
    probe = PodProbe(clusters, cache, ProbeOptions())
    probe.round()
    await settle(probe)
    assert count("down", "failure", "Unreachable") == before["down"] + 1
    assert count("nokey", "failure", "NotConnected") == before["nokey"] + 1
    assert count("bug", "failure", "Error") == before["bug"] + 1  # counted, never raised
    assert sorted(cache.asked) == ["fleet/bug", "fleet/down", "fleet/nokey"]


async def test_one_probe_per_cluster_at_a_time_and_only_probed_clusters() -> None:
    slow = asyncio.Event()
    cache = Cache({"fleet/slow": slow})
    clusters = Clusters(a_cluster("slow"), a_cluster("new", endpoint=None))
    probe = PodProbe(clusters, cache, ProbeOptions())
    probe.round()
    await settle(probe)
    probe.round()  # the first probe of slow is still under way: not a second one
    await settle(probe)
    assert cache.asked == ["fleet/slow"]
    slow.set()
    await settle(probe)
    probe.round()
    await settle(probe)
    assert cache.asked == ["fleet/slow", "fleet/slow"]


async def test_a_clusters_series_exist_from_its_first_probe_and_go_with_it() -> None:
    """Every reason's series at zero from the first probe (Prometheus' increase() loses the
    first count of a series it has no earlier sample of), and none left once it is gone."""
    cache = Cache({"fleet/old": ClusterUnreachable("down")})
    clusters = Clusters(a_cluster("old"))
    probe = PodProbe(clusters, cache, ProbeOptions())
    probe.round()
    await settle(probe)
    assert count("old", "failure", "Unreachable") == 1
    assert sample("old", "success", "Running") == 0
    assert sample("old", "failure", "Rejected") == 0
    clusters.store.delete("fleet/old")
    probe.round()
    assert sample("old", "failure", "Unreachable") is None
    assert sample("old", "success", "Running") is None


async def test_concurrency_is_bounded() -> None:
    gates = {f"fleet/c{i}": asyncio.Event() for i in range(5)}
    cache = Cache(dict(gates))
    probe = PodProbe(
        Clusters(*(a_cluster(f"c{i}") for i in range(5))), cache, ProbeOptions(concurrency=2)
    )
    probe.round()
    await settle(probe)
    assert len(cache.asked) == 2
    for gate in gates.values():
        gate.set()
    await settle(probe)
    assert len(cache.asked) == 5
