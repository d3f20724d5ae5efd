"""The pod-creation probe and the rollout's analysis against real components: a business
cluster (``process`` runtime, its own kube-apiserver and scheduler, KWOK playing the kubelets),
``kokpit operator probe`` as a process of its own under config/rbac/probe-operator.yaml, a real
Prometheus scraping its ``/metrics`` every second, and :mod:`kokpit.providers.analysis`
querying that Prometheus.

Failures are injected for real: an admission policy in the business API server refuses the
probe's pods (:func:`fixtures.probe_faults.deny_probe_pods`)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.business import BusinessCluster
from fixtures.probe_faults import MESSAGE, deny_probe_pods
from fixtures.prometheus import PrometheusServer, prometheus_server, stop
from fixtures.samples import cluster
from kokpit.api.v1alpha1.cluster import operator_kubeconfig_secret
from kokpit.controllers.probe import ProbeOptions
from kokpit.controllers.probe.pod import probe_pod
from kokpit.local import Kubectl, KubectlError, LocalCluster
from kokpit.local import nodes as kwok_nodes
from kokpit.providers.analysis import (
    CONDITION_PATTERN,
    ConditionError,
    Measurement,
    PrometheusClient,
    measure,
    parse,
)
from kokpit.providers.analysis.condition import MAX_LENGTH
from kokpit.runtime import Client, ClientConfig, Forbidden
from kokpit.runtime.resources import NAMESPACES, PODS, SECRETS
from tests.e2e.operators import OperatorProcess, operator_process, write_kubeconfig
from tests.e2e.rbac import apply_rbac, bind_namespaced, service_account
from tests.e2e.support import eventually

pytestmark = pytest.mark.usefixtures("kokpit_crds")
NS = "probe-e2e"
#: Probes every second, each given 10 s to see its pod Running.
PROBE_ARGS = ["--period", "1", "--timeout", "10", "--leader-elect"]
#: The success ratio over the last 15 s, as a rollout's analysis asks it.
WINDOW = "15s"
SUCCESS_RATIO = (
    f'sum(increase(kokpit_probe_pod_creations_total{{cluster="biz",result="success"}}[{WINDOW}]))'
    f' / sum(increase(kokpit_probe_pod_creations_total{{cluster="biz"}}[{WINDOW}]))'
)
LATENCY_P90 = (
    "histogram_quantile(0.9, sum by (le) "
    f'(rate(kokpit_probe_pod_creation_duration_seconds_bucket{{cluster="biz"}}[{WINDOW}])))'
)


@dataclass
class Probing:
    """The probe process, the Prometheus that scrapes it, and a client of that Prometheus."""

    probe: OperatorProcess
    server: PrometheusServer
    prometheus: PrometheusClient


@pytest.fixture(scope="module")
def probe_nodes(biz: BusinessCluster) -> list[str]:
    """Two KWOK nodes in the business cluster, Ready: where probe pods run."""
    names = kwok_nodes.ensure_nodes(biz.kubectl, 2, prefix="probe-node")
    kwok_nodes.wait_ready(biz.kubectl, names, timeout_s=60)
    return names


@pytest.fixture
def probe_identity(kubectl: Kubectl, local_cluster: LocalCluster) -> ClientConfig:
    """``kokpit-system/kokpit-probe-operator`` with exactly config/rbac/probe-operator.yaml,
    its namespaced role bound in NS."""
    apply_rbac(kubectl, "probe-operator")
    bind_namespaced(kubectl, "probe-operator", NS)
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    return service_account(kubectl, admin, "kokpit-system", "kokpit-probe-operator")


@pytest.fixture
def leftover(biz: BusinessCluster, probe_nodes: list[str]) -> str:
    """A probe pod as a probe process that died mid-probe leaves it (made before the probe
    starts, when a test asks for it ahead of ``probing``)."""
    name = "kokpit-probe-leftover"
    # The Cluster-Operator makes the namespace when it grants kokpit's access.
    eventually(
        lambda: "kokpit-probe" in biz.kubectl.run("get", "namespaces", "-o", "name"),
        timeout=30,
        what="the namespace kokpit-probe",
    )
    pod = probe_pod(ProbeOptions())
    pod["metadata"]["name"] = name
    biz.kubectl.apply([pod])
    return name


@pytest.fixture
async def probing(
    biz: BusinessCluster, probe_nodes: list[str], probe_identity: ClientConfig, tmp_path: Path
) -> AsyncIterator[Probing]:
    kubeconfig = write_kubeconfig(probe_identity, tmp_path / "probe-operator.kubeconfig")
    with operator_process("probe", kubeconfig, tmp_path / "probe.log", PROBE_ARGS) as probe:
        await probe.start()
        # Started with its target: a target added later waits for Prometheus' 5 s reload.
        target = f"127.0.0.1:{probe.health_port}"
        with prometheus_server(tmp_path / "prometheus", [target]) as server:
            async with PrometheusClient(server.url) as client:
                yield Probing(probe, server, client)


async def value_until(probing: Probing, query: str, good: str, within: float) -> float:
    """Query until the value meets ``good`` (a condition); fail with the last answer and the
    probe's log."""
    last: float | str = "no answer"

    async def check() -> Measurement | None:
        nonlocal last
        # One query, judged and returned: the value moves between two queries of a rate.
        measurement = await measure(probing.prometheus, query, good)
        last = measurement.value if measurement.value is not None else measurement.message
        return measurement if measurement.phase == "Successful" else None

    try:
        met = await probing.probe.wait(check, f"{query} to meet {good}", within)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast value: {last}") from None
    if met.value is None:
        raise AssertionError(f"{query}: a successful measurement without a value: {met}")
    return met.value


async def test_every_probe_pod_runs_and_prometheus_sees_it(
    leftover: str, probing: Probing, biz: BusinessCluster
) -> None:
    ratio = await value_until(probing, SUCCESS_RATIO, "result == 1", within=45)
    assert ratio == 1
    measurement = await measure(probing.prometheus, SUCCESS_RATIO, "result >= 0.9")
    assert measurement.phase == "Successful", measurement
    # KWOK starts a scheduled pod within a second or two: a sane p90, well under the timeout.
    p90 = await probing.prometheus.query(LATENCY_P90)
    assert 0 < p90 < 10
    # One probe at a time, each pod deleted after it: never a pile of probe pods.
    pods = biz.kubectl.get("pods", "-n", "kokpit-probe", "-l", "kokpit.io/probe=true")
    assert len(pods["items"]) <= 1
    # What a crashed probe left was swept at the first probe.
    assert leftover not in [p["metadata"]["name"] for p in pods["items"]]


async def test_injected_failures_fail_the_analysis_and_it_recovers(
    probing: Probing, biz: BusinessCluster
) -> None:
    await value_until(probing, SUCCESS_RATIO, "result == 1", within=45)
    with deny_probe_pods(biz.kubectl):
        ratio = await value_until(probing, SUCCESS_RATIO, "result < 0.5", within=30)
        assert ratio < 0.5
        measurement = await measure(probing.prometheus, SUCCESS_RATIO, "result >= 0.9")
        assert measurement.phase == "Failed"
        assert measurement.value is not None
        assert measurement.value < 0.5
        assert "does not meet the success condition result >= 0.9" in measurement.message
        # Counted with the reason: the API server refused the pod.
        rejected = 'sum(kokpit_probe_pod_creations_total{cluster="biz",reason="Rejected"})'
        assert await probing.prometheus.query(rejected) >= 1
    await value_until(probing, SUCCESS_RATIO, "result >= 0.9", within=30)
    measurement = await measure(probing.prometheus, SUCCESS_RATIO, "result >= 0.9")
    assert measurement.phase == "Successful", measurement
    # The probe said why, in the API server's words: the policy's message.
    assert MESSAGE in probing.probe.log.read_text()


async def test_a_cluster_kokpit_cannot_reach_is_a_failure_and_the_others_go_on(
    probing: Probing, kubectl: Kubectl, biz: BusinessCluster
) -> None:
    """A Cluster with an endpoint but no kokpit kubeconfig (its runtime is off in this
    Cluster-Operator, so nothing issues one): counted as NotConnected, while biz's probes go
    on succeeding."""
    kubectl.apply([cluster(NS, "ghost", "no-such-package", "kubernetes")])
    try:
        status = {"status": {"endpoint": "https://127.0.0.1:1"}}
        kubectl.run(
            *("patch", "cluster", "-n", NS, "ghost", "--subresource=status"),
            *("--type=merge", "-p", json.dumps(status)),
        )
        ghost = 'sum(kokpit_probe_pod_creations_total{cluster="ghost",result="failure"})'
        await value_until(probing, ghost, "result >= 3", within=30)
        reasons = await probing.prometheus.query(
            'count(kokpit_probe_pod_creations_total{cluster="ghost",reason="NotConnected"})'
        )
        assert reasons == 1
        await value_until(probing, SUCCESS_RATIO, "result == 1", within=30)
        assert probing.probe.running
    finally:
        kubectl.run("delete", "cluster", "-n", NS, "ghost", "--wait=false", "--ignore-not-found")


async def test_the_probe_may_not_do_what_it_does_not_need(
    probe_identity: ClientConfig, kubectl: Kubectl, biz: BusinessCluster
) -> None:
    """Least privilege. In the meta-cluster: Secrets only by name, in bound namespaces, no
    list. In the business cluster, kokpit's identity may run pods in kokpit-probe only, and
    may not make namespaces."""
    async with Client(probe_identity) as client:
        with pytest.raises(Forbidden):
            await client.list(SECRETS, namespace=NS)
        with pytest.raises(Forbidden):
            await client.get(SECRETS, "anything", namespace="default")
    secret = kubectl.get("secret", "-n", NS, operator_kubeconfig_secret(biz.name))
    identity = ClientConfig.from_kubeconfig_data(base64.b64decode(secret["data"]["value"]))
    elsewhere = probe_pod(ProbeOptions())
    elsewhere["metadata"]["namespace"] = "default"
    async with Client(identity) as business:
        with pytest.raises(Forbidden):
            await business.create(PODS, elsewhere)
        with pytest.raises(Forbidden):
            await business.create(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
            )


async def test_a_prometheus_that_is_down_is_an_error_measurement(
    prometheus: PrometheusServer,
) -> None:
    async with PrometheusClient(prometheus.url) as client:
        assert await client.query("vector(1)") == 1
        stop(prometheus.process)
        measurement = await measure(client, SUCCESS_RATIO, "result >= 0.9")
    assert measurement.phase == "Error"
    assert measurement.value is None
    assert measurement.message.startswith(f"cannot reach Prometheus at {prometheus.url} for query")
    assert "kokpit_probe_pod_creations_total" in measurement.message


GOOD_CONDITIONS = [
    "result >= 0.95",
    "result<2.5",
    "result >= 0.9 && result <= 1",
    "result < 0.1 || result > 1e3 && result != -2",
]
BAD_CONDITIONS = [
    "",
    "result",
    "0.95 <= result",
    "result >= 0.95 &&",
    "result >= .5",
    "x result > 1",
]


def test_the_api_server_checks_conditions_as_python_does(kubectl: Kubectl) -> None:
    """CONDITION_PATTERN in a CRD's CEL rule (RE2, in the real API server) accepts and refuses
    what :func:`~kokpit.providers.analysis.parse` does, with the rule's message."""
    message = "must be comparisons of result with a number, such as 'result >= 0.95'"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "conditionchecks.test.kokpit.io"},
        "spec": {
            "group": "test.kokpit.io",
            "scope": "Cluster",
            "names": {
                "plural": "conditionchecks",
                "singular": "conditioncheck",
                "kind": "ConditionCheck",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "condition": {
                                    "type": "string",
                                    "maxLength": MAX_LENGTH,
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": f"self.matches('{CONDITION_PATTERN}')",
                                            "message": message,
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl.apply([crd])
    kubectl.wait_established("conditionchecks.test.kokpit.io")

    def refusal(condition: str) -> str | None:
        """The API server's refusal of an object with ``condition`` (a dry-run), or None."""
        obj = {
            "apiVersion": "test.kokpit.io/v1",
            "kind": "ConditionCheck",
            "metadata": {"generateName": "check-"},
            "condition": condition,
        }
        try:
            kubectl.run("create", "--dry-run=server", "-f", "-", stdin=json.dumps(obj))
        except KubectlError as e:
            return e.stderr
        return None

    try:
        for condition in GOOD_CONDITIONS:
            parse(condition)
            assert refusal(condition) is None, condition
        for condition in BAD_CONDITIONS:
            with pytest.raises(ConditionError):
                parse(condition)
            assert message in (refusal(condition) or ""), condition
    finally:
        kubectl.run("delete", "crd", "conditionchecks.test.kokpit.io", "--wait=false")
