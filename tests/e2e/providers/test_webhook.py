"""Ticket and escalation webhooks against a real HTTPS endpoint on loopback
(:mod:`kokpit.providers.repair.receiver`, TLS from its own CA). No Kubernetes here."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kokpit.providers.repair import RepairTarget
from kokpit.providers.repair.emulator import LocalCA
from kokpit.providers.repair.notify import Escalation
from kokpit.providers.repair.receiver import WebhookReceiver
from kokpit.providers.repair.webhook import (
    EscalationNotifier,
    TicketRepairer,
    WebhookCertificateInvalid,
    WebhookClient,
    WebhookCredentialsInvalid,
    WebhookInvalid,
    WebhookNotConfigured,
    WebhookOptions,
    WebhookRejected,
)

NAMESPACE = "fleet"
TOKEN = "tkn-0123456789abcdef"
PATH = "/hooks/kokpit"
ATTEMPTS = [
    {
        "step": 0,
        "action": "Reboot",
        "state": "TimedOut",
        "startedAt": "2026-11-27T10:00:00Z",
        "finishedAt": "2026-11-27T10:10:00Z",
        "message": "rebooted; the node stayed NotReady",
    },
    {"step": 1, "action": "Ticket", "state": "Started", "startedAt": "2026-11-27T10:10:01Z"},
]


@pytest.fixture
async def webhooks() -> AsyncIterator[WebhookClient]:
    async def read(namespace: str, name: str) -> Mapping[str, Any] | None:
        assert namespace == NAMESPACE, "webhook Secrets are read in the policy's namespace"
        token = {"token": base64.b64encode(TOKEN.encode()).decode()}
        return {"ticket-token": token, "no-token": {"other": "eA=="}}.get(name)

    c = WebhookClient(secrets=read, options=WebhookOptions(retry_delay=0.05))
    try:
        yield c
    finally:
        await c.close()


def hook(receiver: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    assert receiver.ca is not None
    spec: dict[str, Any] = {
        "url": receiver.url(PATH),
        "caBundle": receiver.ca.pem,
        "secretRef": {"name": "ticket-token"},
    }
    spec.update(extra)
    return spec


def target(*, ticket: Mapping[str, Any] | None = None) -> RepairTarget:
    policy: dict[str, Any] = {"metadata": {"name": "kernel", "namespace": NAMESPACE}, "spec": {}}
    if ticket is not None:
        policy["spec"]["ticketWebhook"] = dict(ticket)
    machine = {"metadata": {"name": "m-7", "namespace": NAMESPACE}, "spec": {}}
    return RepairTarget(
        NAMESPACE,
        machine,
        "node-7",
        "prod",
        "KernelDeadlock",
        "m-7-kernel",
        policy=policy,
        attempts=ATTEMPTS,
    )


async def test_ticket_posts_the_fault_with_the_bearer_token_and_reports_the_ticket(
    webhooks: WebhookClient, webhook_receiver: WebhookReceiver
) -> None:
    done = await TicketRepairer(webhooks).repair("Ticket", target(ticket=hook(webhook_receiver)))
    [got] = webhook_receiver.requests_to(PATH)
    assert done == f"ticket TICKET-1 {webhook_receiver.url('/tickets/1')}"
    assert got.method == "POST"
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["Content-Type"] == "application/json"
    assert len(got.headers["Idempotency-Key"]) == 32
    assert got.json() == {
        "event": "Ticket",
        "namespace": NAMESPACE,
        "cluster": "prod",
        "machine": "m-7",
        "node": "node-7",
        "faultType": "KernelDeadlock",
        "remediation": "m-7-kernel",
        "attempts": ATTEMPTS,
    }


async def test_escalation_notice_carries_why(
    webhooks: WebhookClient, webhook_receiver: WebhookReceiver
) -> None:
    t = target()
    await EscalationNotifier(webhooks).escalated(
        Escalation(
            namespace=t.namespace,
            remediation=t.remediation,
            machine=t.machine_name,
            node_name=t.node_name,
            cluster_name=t.cluster_name,
            fault_type=t.fault_type,
            policy="p",
            message="the ladder is exhausted",
            attempts=t.attempts,
            webhook=hook(webhook_receiver),
        )
    )
    [got] = webhook_receiver.requests_to(PATH)
    document = got.json()
    assert isinstance(document, dict)
    assert (document["event"], document["message"]) == ("Escalated", "the ladder is exhausted")
    assert document["attempts"] == ATTEMPTS
    # A ticket about the same attempt is another notice: another key.
    await TicketRepairer(webhooks).repair("Ticket", target(ticket=hook(webhook_receiver)))
    keys = {r.headers["Idempotency-Key"] for r in webhook_receiver.requests_to(PATH)}
    assert len(keys) == 2


async def test_a_plain_http_webhook_is_refused_before_connecting(
    webhooks: WebhookClient, tmp_path: Path
) -> None:
    plain = WebhookReceiver(tmp_path / "plain", tls=False)
    plain.start()
    try:
        with pytest.raises(WebhookInvalid, match="url must be an https URL") as refused:
            await TicketRepairer(webhooks).repair(
                "Ticket", target(ticket={"url": plain.url(PATH), "secretRef": {"name": "x"}})
            )
        assert plain.received == []
    finally:
        plain.stop()
    assert refused.value.reason == "WebhookInvalid"
    assert "RemediationPolicy fleet/kernel" in str(refused.value)


async def test_a_certificate_of_another_ca_is_refused_and_nothing_is_sent(
    webhooks: WebhookClient, webhook_receiver: WebhookReceiver
) -> None:
    other = LocalCA.create("some other CA").pem
    for ca_bundle in (other, None):  # None: the system's CAs, which do not know it either
        with pytest.raises(WebhookCertificateInvalid, match="set caBundle") as refused:
            await TicketRepairer(webhooks).repair(
                "Ticket", target(ticket=hook(webhook_receiver, caBundle=ca_bundle))
            )
        assert "is not trusted (unable to get local issuer certificate)" in str(refused.value)
    assert webhook_receiver.received == []


async def test_a_busy_endpoint_is_tried_again_a_failing_one_is_not(
    webhooks: WebhookClient, webhook_receiver: WebhookReceiver
) -> None:
    ticket = target(ticket=hook(webhook_receiver))
    webhook_receiver.reply(PATH, 503, b"busy")
    with pytest.raises(WebhookRejected, match="answered HTTP 503: busy"):
        await TicketRepairer(webhooks).repair("Ticket", ticket)
    assert len(webhook_receiver.requests_to(PATH)) == webhooks.options.attempts
    keys = {r.headers["Idempotency-Key"] for r in webhook_receiver.requests_to(PATH)}
    assert len(keys) == 1

    # A 500 may come after the ticket was made: not sent again. An echoed token is hidden.
    webhook_receiver.received.clear()
    webhook_receiver.reply(PATH, 500, json.dumps({"error": f"bad token {TOKEN}"}).encode())
    with pytest.raises(WebhookRejected) as rejected:
        await TicketRepairer(webhooks).repair("Ticket", ticket)
    assert len(webhook_receiver.requests_to(PATH)) == 1
    assert TOKEN not in str(rejected.value)
    assert "bad token ***" in str(rejected.value)


async def test_an_oversized_answer_is_not_read(
    webhooks: WebhookClient, webhook_receiver: WebhookReceiver
) -> None:
    huge = json.dumps({"id": "T-1", "pad": "x" * (2 * webhooks.options.response_max)}).encode()
    webhook_receiver.reply(PATH, 201, huge)
    done = await TicketRepairer(webhooks).repair("Ticket", target(ticket=hook(webhook_receiver)))
    assert done == "ticket requested (HTTP 201)"


async def test_missing_settings_are_clear_and_send_nothing(
    webhooks: WebhookClient, webhook_receiver: WebhookReceiver
) -> None:
    tickets = TicketRepairer(webhooks)
    with pytest.raises(WebhookNotConfigured, match=r"spec\.ticketWebhook .* is not set"):
        await tickets.repair("Ticket", target())
    with pytest.raises(WebhookCredentialsInvalid, match="token Secret gone not found"):
        await tickets.repair(
            "Ticket", target(ticket=hook(webhook_receiver, secretRef={"name": "gone"}))
        )
    with pytest.raises(WebhookCredentialsInvalid, match="Secret no-token lacks token"):
        await tickets.repair(
            "Ticket", target(ticket=hook(webhook_receiver, secretRef={"name": "no-token"}))
        )
    assert webhook_receiver.received == []
