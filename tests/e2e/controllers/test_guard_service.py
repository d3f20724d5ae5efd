"""The guard over HTTPS (``kokpit operator guard``, its own process under
config/rbac/guard-operator.yaml): callers are who the meta-cluster says their token is, may ask
only where RBAC lets them, and the audit trail names them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kokpit.api.v1alpha1 import RISK_LEDGERS, RISK_POLICIES
from kokpit.local import Kubectl, LocalCluster
from kokpit.providers.guard import RiskRequest
from kokpit.providers.guard.remote import GuardError, RemoteGuard
from kokpit.providers.repair.emulator import LocalCA
from kokpit.runtime import Client, ClientConfig, NotFound
from tests.e2e.operators import OperatorProcess, _free_port, operator_process, write_kubeconfig
from tests.e2e.rbac import operator_identity

NS = "guard-callers"
Object = dict[str, Any]
pytestmark = pytest.mark.usefixtures("kokpit_crds")


@dataclass
class Service:
    url: str
    ca: LocalCA
    process: OperatorProcess


@pytest.fixture
async def service(
    kubectl: Kubectl, local_cluster: LocalCluster, tmp_path: Path
) -> AsyncIterator[Service]:
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    identity = operator_identity(kubectl, admin, "guard-operator", [])
    kubeconfig = write_kubeconfig(identity, tmp_path / "guard.kubeconfig")
    ca = LocalCA.create("guard-e2e")
    cert, key = ca.issue_server(tmp_path / "tls", hosts=("127.0.0.1",))
    port = _free_port()
    args = ["--bind-address", "127.0.0.1", "--port", str(port)]
    args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    with operator_process("guard", kubeconfig, tmp_path / "guard.log", args) as op:
        await op.start()
        yield Service(f"https://127.0.0.1:{port}", ca, op)


@pytest.fixture
def callers(kubectl: Kubectl) -> Iterator[dict[str, str]]:
    """Two ServiceAccounts' tokens: ``asker`` bound to kokpit-guard-caller, ``stranger`` not."""
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    tokens = {}
    for name in ("asker", "stranger"):
        kubectl.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": NS},
                }
            ]
        )
        tokens[name] = kubectl.run("create", "token", "-n", NS, name, "--duration=1h").strip()
    kubectl.run(
        "create",
        "clusterrolebinding",
        "guard-e2e-asker",
        "--clusterrole=kokpit-guard-caller",
        f"--serviceaccount={NS}:asker",
    )
    yield tokens
    kubectl.run("delete", "clusterrolebinding", "guard-e2e-asker", "--ignore-not-found")


@pytest.fixture
async def limited(client: Client) -> AsyncIterator[str]:
    """Two reboots per ten minutes, for this test only (policies are cluster-wide)."""
    name = "two-reboots"
    await client.create(
        RISK_POLICIES,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "RiskPolicy",
            "metadata": {"name": name},
            "spec": {"actions": ["Reboot"], "rateLimit": {"count": 2, "windowSeconds": 600}},
        },
    )
    yield name
    with contextlib.suppress(NotFound):
        await client.delete(RISK_POLICIES, name)


def reboot(n: int) -> RiskRequest:
    return RiskRequest("Reboot", f"job-{n}", f"Machine fleet/m{n}", "fleet/prod")


async def post(service: Service, verb: str, body: Any, token: str | None) -> tuple[int, Object]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{service.url}/v1/{verb}",
            data=body if isinstance(body, str) else json.dumps(body),
            headers=headers,
            ssl=service.ca.client_context(),
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_only_callers_rbac_lets_ask_are_answered(
    service: Service, callers: dict[str, str], limited: str
) -> None:
    body = {"action": "Reboot", "id": "x", "target": "Machine fleet/m0"}
    status, answer = await post(service, "acquire", body, None)
    assert status == 401
    assert "bearer token" in answer["error"]
    status, answer = await post(service, "acquire", body, "not-a-token")
    assert (status, answer["error"]) == (401, "the meta-cluster does not know this token")
    status, answer = await post(service, "acquire", body, callers["stranger"])
    assert status == 403
    assert f"system:serviceaccount:{NS}:stranger may not acquire" in answer["error"]
    assert "riskpolicies/acquire" in answer["error"]
    # A bad request says what is wrong, and spends nothing.
    for bad, message in [
        ("{", "not JSON"),
        ({"action": "Format", "id": "x", "target": "t"}, "action must be one of"),
        ({"action": "Reboot", "id": "", "target": "t"}, "id must be a string"),
        ({"action": "Reboot", "id": "x", "target": "t", "cluster": "prod"}, "namespace/name"),
    ]:
        status, answer = await post(service, "acquire", bad, callers["asker"])
        assert status == 400, answer
        assert message in answer["error"]


async def test_a_caller_asks_tries_and_reports_and_the_ledger_names_it(
    service: Service, callers: dict[str, str], limited: str, client: Client
) -> None:
    guard = RemoteGuard(service.url, callers["asker"], ca_pem=service.ca.pem)
    try:
        assert (await guard.assess(reboot(1))).allowed
        assert (await guard.acquire(reboot(1))).allowed
        assert (await guard.acquire(reboot(1))).allowed, "the same key again: the same grant"
        assert (await guard.acquire(reboot(2))).allowed
        dry = await guard.assess(reboot(3))
        assert not dry.allowed
        assert "rate limit: 2 of 2 grants in the last 600s" in dry.reason
        denied = await guard.acquire(reboot(3))
        assert not denied.allowed
        assert denied.retry_after is not None
        assert 590 < denied.retry_after <= 600
        await guard.release(reboot(1), "Succeeded")
    finally:
        await guard.close()
    ledger = await client.get(RISK_LEDGERS, limited)
    decisions = ledger["status"]["decisions"]
    assert {d["requester"] for d in decisions} == {f"system:serviceaccount:{NS}:asker"}
    assert [(d["id"], d["allowed"]) for d in decisions] == [
        ("job-1", True),
        ("job-2", True),
        ("job-3", False),
    ], "a dry run, and asking again for a grant held, record nothing"
    (scope,) = ledger["status"]["scopes"]
    assert [h["id"] for h in scope["inFlight"]] == ["job-2"]

    stranger = RemoteGuard(service.url, callers["stranger"], ca_pem=service.ca.pem)
    try:
        with pytest.raises(GuardError, match="403"):
            await stranger.acquire(reboot(4))
    finally:
        await stranger.close()
