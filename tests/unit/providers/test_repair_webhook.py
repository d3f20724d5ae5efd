"""The webhooks' pure parts: checking a policy's Webhook, the documents, the idempotency key,
and what a ticket answer is reported as."""

from __future__ import annotations

from typing import Any

import pytest

from kokpit.providers.repair import RepairTarget
from kokpit.providers.repair.emulator import LocalCA
from kokpit.providers.repair.webhook import (
    WebhookEndpoint,
    WebhookInvalid,
    WebhookReply,
    idempotency_key,
    payload,
    ticket_summary,
)

CA = LocalCA.create("unit test CA").pem
NAME = "spec.ticketWebhook of RemediationPolicy fleet/p"


def target(attempts: list[dict[str, Any]] | None = None) -> RepairTarget:
    return RepairTarget(
        "fleet",
        {"metadata": {"name": "m-1"}},
        "node-1",
        "prod",
        "ReadonlyFilesystem",
        "m-1-ro",
        attempts=attempts or [],
    )


def test_endpoint_of_a_good_webhook() -> None:
    endpoint = WebhookEndpoint.from_spec(
        {"url": "https://t.example.com/h?key=abc", "caBundle": CA, "secretRef": {"name": "s"}},
        name=NAME,
    )
    assert (endpoint.url, endpoint.secret) == ("https://t.example.com/h?key=abc", "s")
    assert endpoint.shown == "https://t.example.com/h"  # a query may hold a key
    assert CA not in repr(endpoint)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"url": "http://t.example.com/h"}, "url must be an https URL"),
        ({"url": "https://user:pw@t.example.com/h"}, "without a user or password"),
        ({"url": "file:///etc/passwd"}, "url must be an https URL"),
        ({"url": "https:///nohost"}, "url must be an https URL"),
        ({}, "url must be an https URL"),
        ({"url": "https://t.example.com", "caBundle": "/etc/ssl/ca.pem"}, "not PEM"),
    ],
)
def test_endpoint_refuses_what_it_cannot_use(spec: dict[str, Any], says: str) -> None:
    with pytest.raises(WebhookInvalid) as refused:
        WebhookEndpoint.from_spec(spec, name=NAME)
    assert str(refused.value).startswith(f"{NAME}: ")
    assert says in str(refused.value)
    assert "pw@" not in str(refused.value)


def test_payload_carries_the_fault_and_only_known_attempt_fields() -> None:
    attempt = {"step": 0, "action": "Reboot", "state": "Failed", "startedAt": "t", "extra": 1}
    assert payload("Escalated", target([attempt]), message="why") == {
        "event": "Escalated",
        "namespace": "fleet",
        "cluster": "prod",
        "machine": "m-1",
        "node": "node-1",
        "faultType": "ReadonlyFilesystem",
        "remediation": "m-1-ro",
        "attempts": [{"step": 0, "action": "Reboot", "state": "Failed", "startedAt": "t"}],
        "message": "why",
    }
    assert "message" not in payload("Ticket", target())


def test_idempotency_key_is_per_notice() -> None:
    first = [{"step": 2, "startedAt": "2026-11-27T10:00:00Z"}]
    again = [{"step": 2, "startedAt": "2026-11-27T10:00:00Z", "state": "Failed"}]
    later = [*first, {"step": 2, "startedAt": "2026-11-27T12:00:00Z"}]
    key = idempotency_key("Ticket", target(first))
    assert key == idempotency_key("Ticket", target(again))
    assert key != idempotency_key("Escalated", target(first))
    assert key != idempotency_key("Ticket", target(later))


@pytest.mark.parametrize(
    ("document", "summary"),
    [
        ({"id": "OPS-1", "url": "https://t/OPS-1"}, "ticket OPS-1 https://t/OPS-1"),
        ({"id": 42}, "ticket 42"),
        ({"url": "https://t/1"}, "https://t/1"),
        ({"id": "a\nb", "url": "javascript:alert(1)"}, "ticket requested (HTTP 201)"),
        ({"id": "x" * 500}, "ticket requested (HTTP 201)"),
        (["OPS-1"], "ticket requested (HTTP 201)"),
        ("created", "ticket requested (HTTP 201)"),
        (None, "ticket requested (HTTP 201)"),
    ],
)
def test_ticket_summary(document: Any, summary: str) -> None:
    assert ticket_summary(WebhookReply(201, document)) == summary
