"""Gray-scale rollouts of Machines against the real meta-cluster: the Rollout-Operator and the
Machine-Operator run as processes of their own under their RBAC (config/rbac), on real sshd
hosts (a verify step that really fails on the canary) and on simulated hosts (``sim``: batches
of many Machines). A person's commands go through the ``kokpit rollout`` CLI; the crash test
SIGKILLs the Rollout-Operator mid-batch. The analysis queries a real Prometheus that scrapes
``kokpit operator probe``, whose pods the business cluster really refuses when a test says so
(an admission policy)."""

from __future__ import annotations

import collections
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.business import BusinessCluster
from fixtures.probe_faults import deny_probe_pods
from fixtures.prometheus import PrometheusServer, prometheus_server
from fixtures.samples import app_package
from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS, MACHINES, RISK_POLICIES, ROLLOUTS
from kokpit.api.v1alpha1.rollout import CHANGE_ANNOTATION
from kokpit.local import Kubectl, LocalCluster
from kokpit.local import nodes as kwok_nodes
from kokpit.providers.analysis import PrometheusClient, measure
from kokpit.providers.machine.sshd import SimulatedHost
from kokpit.runtime import Client, ClientConfig
from kokpit.runtime.resources import EVENTS, SECRETS
from tests.e2e.operators import OperatorProcess, operator_process, write_kubeconfig
from tests.e2e.rbac import apply_rbac, bind_namespaced, running_operator, service_account
from tests.e2e.support import condition, until

pytestmark = pytest.mark.usefixtures("kokpit_crds", "biz")
NS = "rollouts-e2e"
Object = dict[str, Any]


# -- operators ------------------------------------------------------------------------------


@pytest.fixture
async def machine_operator(
    local_cluster: LocalCluster, kubectl: Kubectl, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """The Machine-Operator as a process, ssh and sim executors, its RBAC bound in NS."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    args = ["--executors", "ssh,sim", "--kwok-nodes", "ssh,sim", "--sim-latency", "0.5"]
    async with running_operator("machine", kubectl, admin, [NS], tmp_path, args) as op:
        yield op


@pytest.fixture
async def rollout_operator(
    local_cluster: LocalCluster, kubectl: Kubectl, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """The Rollout-Operator as a process, with exactly config/rbac/rollout-operator.yaml."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    args = ["--poll-interval", "1", "--max-concurrent-changes", "2"]
    async with running_operator("rollout", kubectl, admin, [NS], tmp_path, args) as op:
        yield op


@pytest.fixture
def hosts(ssh_hosts: list[SimulatedHost]) -> list[SimulatedHost]:
    """The session's sshd hosts, running, with empty roots."""
    for host in ssh_hosts:
        host.start()
        subprocess.run(["rm", "-rf", str(host.root / "opt")], check=True)
    return ssh_hosts


# -- objects --------------------------------------------------------------------------------


async def package_versions(client: Client, *specs: tuple[str, str | None]) -> list[str]:
    """Package versions of ``app`` at each (version, verify), named for this test."""
    tag = secrets.token_hex(3)
    names = []
    for version, verify in specs:
        name = f"app-{version}-{tag}"
        await client.create(MACHINE_PACKAGE_VERSIONS, app_package(name, version, verify))
        names.append(name)
    return names


def machine(name: str, pv: str, group: str, host: SimulatedHost | None = None) -> Object:
    spec: Object = {"clusterRef": {"name": "biz"}, "packageVersion": pv}
    if host is None:
        spec |= {"executor": "sim", "address": "10.0.0.1"}
    else:
        spec |= {"address": host.address, "port": host.port, "sshSecretRef": {"name": name}}
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": name, "namespace": NS, "labels": {"group": group}},
        "spec": spec,
    }


async def machines(
    client: Client, group: str, pv: str, count: int, hosts: list[SimulatedHost] | None = None
) -> list[str]:
    """``count`` Machines labelled group=``group`` at ``pv``, Ready when this returns."""
    names = [f"{group}-{i:02d}" for i in range(count)]
    for i, name in enumerate(names):
        host = hosts[i] if hosts else None
        if host is not None:
            await client.apply(SECRETS, host.ssh_secret(NS, name), field_manager="test")
        await client.create(MACHINES, machine(name, pv, group, host))

    async def all_ready() -> bool:
        items = (await client.list(MACHINES, namespace=NS, label_selector=f"group={group}")).items
        return len(items) == count and all(ready(m, pv) for m in items)

    await until(f"{count} Machines Ready at {pv}", all_ready, 120)
    return names


def ready(obj: Object, pv: str) -> bool:
    status = obj.get("status") or {}
    return (
        status.get("packageVersion") == pv
        and (condition(obj, "Ready") or {}).get("status") == "True"
    )


def rollout(name: str, group: str, pv: str, batches: list[Object], **spec: Any) -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "target": {
                "kind": "Machine",
                "selector": {"matchLabels": {"group": group}},
                "packageVersion": pv,
            },
            "batches": batches,
            **spec,
        },
    }


async def rollout_where(
    client: Client, name: str, phase: str, within: float = 120, reason: str | None = None
) -> Object:
    async def check() -> Object | None:
        obj = await client.get(ROLLOUTS, name, namespace=NS)
        status = obj.get("status") or {}
        # A command's effect is written before the rest of its pass (so a crash cannot lose
        # it): wait for the pass's own write too, which plans the rollout (total).
        if status.get("phase") != phase or status.get("total") is None:
            return None
        if reason and (status.get("pausedReason") != reason):
            return None
        return obj

    try:
        return await until(f"rollout {name} {phase} {reason or ''}", check, within)
    except AssertionError:
        obj = await client.get(ROLLOUTS, name, namespace=NS)
        raise AssertionError(f"rollout {name} never {phase}: {obj.get('status')}") from None


async def group_of(client: Client, group: str) -> dict[str, Object]:
    items = (await client.list(MACHINES, namespace=NS, label_selector=f"group={group}")).items
    return {m["metadata"]["name"]: m for m in items}


def mark(obj: Object) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get(CHANGE_ANNOTATION)


def batch_of(obj: Object) -> int:
    value = mark(obj)
    assert value is not None, f"{obj['metadata']['name']} carries no mark"
    return int(value.split("/")[2])


async def reasons(client: Client, name: str) -> list[str]:
    events = (await client.list(EVENTS, namespace=NS)).items
    return [e["reason"] for e in events if e["regarding"].get("name") == name]


def kokpit_cli(local_cluster: LocalCluster, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kokpit",
            "rollout",
            "--kubeconfig",
            str(local_cluster.kubeconfig),
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


# -- tests ----------------------------------------------------------------------------------


async def test_a_canary_whose_verify_fails_aborts_and_only_the_canary_is_moved_back(
    client: Client,
    hosts: list[SimulatedHost],
    machine_operator: OperatorProcess,
    rollout_operator: OperatorProcess,
) -> None:
    good, bad = await package_versions(client, ("1", None), ("2", "echo broken >&2; exit 1"))
    names = await machines(client, "real", good, 4, hosts)
    spec = {"healthCheck": {"timeoutSeconds": 90}}
    batches = [{"size": "1"}, {"size": "50%"}, {"size": "100%"}]
    await client.create(ROLLOUTS, rollout("real", "real", bad, batches, **spec))

    done = await rollout_where(client, "real", "Aborted", within=150)
    status = done["status"]
    assert "real-00: a step of" in status["abortReason"]
    assert [b["state"] for b in status["batches"]] == ["Failed"]
    assert (condition(done, "RolledBack") or {}).get("status") == "True"

    now = await group_of(client, "real")
    canary = now["real-00"]
    assert batch_of(canary) == 0
    assert canary["spec"]["packageVersion"] == good
    # Back on the old version: the Machine-Operator installed 1 again after 2 failed.
    assert ready(canary, good)
    assert (hosts[0].root / "opt/kokpit/app.version").read_text().strip() == "1"
    installs = (hosts[0].root / "opt/kokpit/steps.log").read_text().split("\n")
    assert "app install 2" in installs, "the canary really got the new version"
    for name, host in zip(names[1:], hosts[1:], strict=True):
        other = now[name]
        assert mark(other) is None, name
        assert other["metadata"]["generation"] == 1, name
        assert "app install 2" not in (host.root / "opt/kokpit/steps.log").read_text(), name
    seen = await until("Aborted and RolledBack Events", lambda: _has(client, "real"), 30)
    assert seen


async def _has(client: Client, name: str, *wanted: str) -> bool:
    have = await reasons(client, name)
    return all(r in have for r in (wanted or ("Aborted", "RolledBack")))


async def test_a_person_pauses_passes_a_manual_gate_and_a_late_command_is_refused(
    client: Client,
    local_cluster: LocalCluster,
    machine_operator: OperatorProcess,
    rollout_operator: OperatorProcess,
) -> None:
    old, new = await package_versions(client, ("1", None), ("2", None))
    await machines(client, "gated", old, 10)
    batches: list[Object] = [{"size": "1", "manualGate": True}, {"size": "30%"}, {"size": "100%"}]
    obj = rollout("gated", "gated", new, batches)
    obj["metadata"]["annotations"] = {"kokpit.io/rollout-command": "pause"}  # paused at birth
    await client.create(ROLLOUTS, obj)

    paused = await rollout_where(client, "gated", "Paused", reason="PausedByPerson")
    assert paused["status"]["total"] == 10
    assert not any(mark(m) for m in (await group_of(client, "gated")).values())

    assert "resume requested" in kokpit_cli(local_cluster, "resume", "gated", "-n", NS)
    gate = await rollout_where(client, "gated", "Paused", reason="AwaitingApproval")
    assert gate["status"]["batches"][0]["state"] == "Pausing"
    changed = [n for n, m in (await group_of(client, "gated")).items() if mark(m)]
    assert changed == ["gated-00"], "only the canary moved before the gate"

    kokpit_cli(local_cluster, "resume", "gated", "-n", NS)
    done = await rollout_where(client, "gated", "Succeeded")
    now = await group_of(client, "gated")
    assert collections.Counter(batch_of(m) for m in now.values()) == {0: 1, 1: 3, 2: 6}
    assert all(ready(m, new) and m["metadata"]["generation"] == 2 for m in now.values())
    assert [b["state"] for b in done["status"]["batches"]] == ["Succeeded"] * 3
    assert "Succeeded" in kokpit_cli(local_cluster, "list", "-n", NS)

    kokpit_cli(local_cluster, "retry", "gated", "-n", NS)  # only an Aborted rollout retries
    await until("the refusal", lambda: _has(client, "gated", "CommandRefused"), 30)
    after = await client.get(ROLLOUTS, "gated", namespace=NS)
    assert after["status"]["phase"] == "Succeeded"
    assert "kokpit.io/rollout-command" not in (after["metadata"].get("annotations") or {})


async def test_the_operator_sigkilled_mid_batch_changes_no_machine_twice_and_skips_none(
    client: Client,
    local_cluster: LocalCluster,
    machine_operator: OperatorProcess,
    rollout_operator: OperatorProcess,
) -> None:
    old, new = await package_versions(client, ("1", None), ("2", None))
    await machines(client, "crash", old, 12)
    batches = [{"size": "2"}, {"size": "6"}, {"size": "100%"}]
    await client.create(ROLLOUTS, rollout("crash", "crash", new, batches))

    async def batch_one_started() -> dict[str, Object] | None:
        now = await group_of(client, "crash")
        return now if any(mark(m) and batch_of(m) == 1 for m in now.values()) else None

    await rollout_operator.wait(batch_one_started, "batch 1 to start", 90)
    rollout_operator.kill()
    at_kill = {n: mark(m) for n, m in (await group_of(client, "crash")).items() if mark(m)}
    await rollout_operator.start()

    await rollout_where(client, "crash", "Succeeded", within=120)
    now = await group_of(client, "crash")
    for name, value in at_kill.items():
        assert mark(now[name]) == value, f"{name} was changed again after the restart"
    assert collections.Counter(batch_of(m) for m in now.values()) == {0: 2, 1: 6, 2: 4}
    assert all(m["metadata"]["generation"] == 2 for m in now.values()), "one change each"

    # A second rollout, aborted by a person at its gate: every Machine it changed goes back.
    newer = (await package_versions(client, ("3", None)))[0]
    gated: list[Object] = [{"size": "4", "manualGate": True}, {"size": "100%"}]
    await client.create(ROLLOUTS, rollout("crash-2", "crash", newer, gated))
    await rollout_where(client, "crash-2", "Paused", reason="AwaitingApproval")
    kokpit_cli(local_cluster, "abort", "crash-2", "-n", NS)
    aborted = await rollout_where(client, "crash-2", "Aborted", within=90)
    assert aborted["status"]["abortReason"] == "aborted by a person"
    back = await group_of(client, "crash")
    # created (1), the first rollout (2); for the first four: moved to 3 (3) and back (4)
    generations = {n: m["metadata"]["generation"] for n, m in back.items()}
    assert collections.Counter(generations.values()) == {2: 8, 4: 4}, generations
    assert all(ready(m, new) for m in back.values())


async def test_a_large_rollout_waits_for_approval_and_its_batches_for_the_guard(
    client: Client,
    local_cluster: LocalCluster,
    machine_operator: OperatorProcess,
    rollout_operator: OperatorProcess,
) -> None:
    old, new = await package_versions(client, ("1", None), ("2", None))
    await machines(client, "guarded", old, 6)
    policy = {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RiskPolicy",
        "metadata": {"name": "rollout-batches"},
        "spec": {"actions": ["RolloutBatch"], "rateLimit": {"count": 2, "windowSeconds": 600}},
    }
    await client.create(RISK_POLICIES, policy)
    try:
        batches: list[Object] = [{"size": "1"}, {"size": "2"}, {"size": "100%"}]
        spec = {"approval": {"aboveObjects": 5}}
        await client.create(ROLLOUTS, rollout("guarded", "guarded", new, batches, **spec))

        waiting = await rollout_where(client, "guarded", "Paused", reason="NeedsApproval")
        assessment = waiting["status"]["assessment"]
        assert assessment["decision"] == "NeedsApproval"
        assert (assessment["objects"], assessment["clusters"], assessment["notReady"]) == (6, 1, 0)
        assert "6 objects (approval needed above 5)" in assessment["reason"]
        assert "within budget" in assessment["guard"]
        assert not any(mark(m) for m in (await group_of(client, "guarded")).values())

        kokpit_cli(local_cluster, "resume", "guarded", "-n", NS)  # a person approves

        async def held() -> Object | None:
            obj = await client.get(ROLLOUTS, "guarded", namespace=NS)
            batch = (obj.get("status") or {}).get("batches", [{}])[-1]
            return obj if batch.get("state") == "Waiting" and batch.get("index") == 2 else None

        stopped = await until("the third batch to wait for the guard", held, 90)
        assert "RiskPolicy rollout-batches" in stopped["status"]["batches"][2]["message"]
        changed = [m for m in (await group_of(client, "guarded")).values() if mark(m)]
        assert len(changed) == 3, "two batches (1 + 2) under a budget of two"
        await until("a GuardDenied Event", lambda: _has(client, "guarded", "GuardDenied"), 30)
    finally:
        await client.delete(RISK_POLICIES, "rollout-batches")
    await rollout_where(client, "guarded", "Succeeded", within=120)
    now = await group_of(client, "guarded")
    assert all(ready(m, new) for m in now.values())


# -- analysis: the probe's pod-creation success, through a real Prometheus --------------------

#: The probe's success ratio over the last 15 s, as the rollout's analysis asks it.
SUCCESS_RATIO = (
    'sum(increase(kokpit_probe_pod_creations_total{cluster="biz",result="success"}[15s]))'
    ' / sum(increase(kokpit_probe_pod_creations_total{cluster="biz"}[15s]))'
)


@pytest.fixture
async def prometheus_of_probe(
    biz: BusinessCluster, kubectl: Kubectl, local_cluster: LocalCluster, tmp_path: Path
) -> AsyncIterator[PrometheusServer]:
    """``kokpit operator probe`` (its RBAC bound in NS) probing the business cluster every
    second on two KWOK nodes, and a real Prometheus scraping it."""
    nodes = kwok_nodes.ensure_nodes(biz.kubectl, 2, prefix="probe-node")
    kwok_nodes.wait_ready(biz.kubectl, nodes, timeout_s=60)
    apply_rbac(kubectl, "probe-operator")
    bind_namespaced(kubectl, "probe-operator", NS)
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    identity = service_account(kubectl, admin, "kokpit-system", "kokpit-probe-operator")
    kubeconfig = write_kubeconfig(identity, tmp_path / "probe.kubeconfig")
    args = ["--period", "1", "--timeout", "10"]
    with operator_process("probe", kubeconfig, tmp_path / "probe.log", args) as probe:
        await probe.start()
        target = f"127.0.0.1:{probe.health_port}"
        with prometheus_server(tmp_path / "prometheus", [target]) as server:
            async with PrometheusClient(server.url) as prometheus:

                async def healthy() -> bool:
                    taken = await measure(prometheus, SUCCESS_RATIO, "result >= 0.9")
                    return taken.phase == "Successful"

                await until("the probe's pods to run", healthy, 90, every=1)
            yield server


async def test_pod_creation_failing_mid_rollout_aborts_it_and_moves_every_changed_machine_back(
    client: Client,
    biz: BusinessCluster,
    prometheus_of_probe: PrometheusServer,
    machine_operator: OperatorProcess,
    rollout_operator: OperatorProcess,
) -> None:
    old, new = await package_versions(client, ("1", None), ("2", None))
    await machines(client, "analyzed", old, 9)
    analysis = {
        "prometheus": prometheus_of_probe.url,
        "intervalSeconds": 3,
        "count": 3,
        "metrics": [
            {"name": "pod-creation", "query": SUCCESS_RATIO, "successCondition": "result >= 0.9"}
        ],
    }
    batches: list[Object] = [{"size": "1"}, {"size": "4"}, {"size": "100%"}]
    await client.create(ROLLOUTS, rollout("analyzed", "analyzed", new, batches, analysis=analysis))

    async def second_batch() -> Object | None:
        obj = await client.get(ROLLOUTS, "analyzed", namespace=NS)
        status = obj.get("status") or {}
        return obj if status.get("currentBatch") == 1 else None

    at_second = await until("the canary to pass its analysis", second_batch, 90)
    canary = at_second["status"]["batches"][0]
    assert canary["state"] == "Succeeded"
    assert [m["phase"] for m in canary["measurements"]] == ["Successful"] * 3

    with deny_probe_pods(biz.kubectl):  # the business cluster refuses the probe's pods
        done = await rollout_where(client, "analyzed", "Aborted", within=120)
    status = done["status"]
    assert "metric pod-creation failed" in status["abortReason"]
    assert [b["state"] for b in status["batches"]] == ["Succeeded", "Failed"]
    failed = [m for m in status["batches"][1]["measurements"] if m["phase"] == "Failed"]
    assert failed, status["batches"][1]
    assert "does not meet the success condition result >= 0.9" in failed[0]["message"]
    assert (condition(done, "AnalysisPassing") or {}).get("status") == "False"
    assert (condition(done, "RolledBack") or {}).get("status") == "True"

    now = await group_of(client, "analyzed")
    generations = collections.Counter(m["metadata"]["generation"] for m in now.values())
    assert generations == {3: 5, 1: 4}, "five changed and moved back once; four never touched"
    assert all(ready(m, old) for m in now.values())


async def test_two_rollouts_never_move_one_machine_at_once(
    client: Client,
    local_cluster: LocalCluster,
    machine_operator: OperatorProcess,
    rollout_operator: OperatorProcess,
) -> None:
    v1, v2, v3 = await package_versions(client, ("1", None), ("2", None), ("3", None))
    await machines(client, "shared", v1, 4)
    first: list[Object] = [{"size": "1", "manualGate": True}, {"size": "100%"}]
    await client.create(ROLLOUTS, rollout("first", "shared", v2, first))
    await rollout_where(client, "first", "Paused", reason="AwaitingApproval")  # holds shared-00

    await client.create(ROLLOUTS, rollout("second", "shared", v3, [{"size": "100%"}]))
    second = await rollout_where(client, "second", "Succeeded")
    assert second["status"]["total"] == 3
    await until("the Contested Event", lambda: _has(client, "second", "Contested"), 30)
    now = await group_of(client, "shared")
    assert now["shared-00"]["spec"]["packageVersion"] == v2, "left to the first rollout"
    assert all(ready(now[f"shared-0{i}"], v3) for i in (1, 2, 3))

    kokpit_cli(local_cluster, "abort", "first", "-n", NS)
    await rollout_where(client, "first", "Aborted")
    back = (await group_of(client, "shared"))["shared-00"]
    assert ready(back, v1)
    versions = {
        n: m["spec"]["packageVersion"] for n, m in (await group_of(client, "shared")).items()
    }
    assert versions == {"shared-00": v1, "shared-01": v3, "shared-02": v3, "shared-03": v3}


async def test_a_namespace_the_operator_is_not_bound_in_is_a_message_naming_the_role(
    client: Client, namespace: str, rollout_operator: OperatorProcess
) -> None:
    for name in ("unbound-0", "unbound-1"):
        obj = machine(name, "app-1", "unbound")
        obj["metadata"]["namespace"] = namespace
        await client.create(MACHINES, obj)
    obj = rollout("unbound", "unbound", "app-2", [{"size": "100%"}])
    obj["metadata"]["namespace"] = namespace
    obj["spec"]["healthCheck"] = {"maxUnavailable": 2}  # nobody keeps these Machines
    await client.create(ROLLOUTS, obj)

    async def refused() -> Object | None:
        got = await client.get(ROLLOUTS, "unbound", namespace=namespace)
        batches = (got.get("status") or {}).get("batches") or [{}]
        return (
            got if "kokpit-rollout-operator-namespaced" in batches[0].get("message", "") else None
        )

    said = await until("the batch to name the role to bind", refused, 60)
    assert (
        f"may not change Machines in namespace {namespace}"
        in said["status"]["batches"][0]["message"]
    )
    items = (await client.list(MACHINES, namespace=namespace)).items
    assert all(m["spec"]["packageVersion"] == "app-1" and not mark(m) for m in items)
