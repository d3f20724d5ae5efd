"""Webhooks: the Ticket repair action and the escalation notice, POSTed as JSON.

A RemediationPolicy names two optional endpoints (:class:`~kokpit.api.v1alpha1.
remediationpolicy.Webhook`): ``spec.ticketWebhook`` opens a ticket for people (the Ticket rung
of a ladder, :class:`TicketRepairer`), ``spec.escalationWebhook`` is told when a remediation is
Escalated (:class:`EscalationNotifier`, called by the Remediation controller).

Invariants:

* https only, checked here again (the API server checks it first): a URL with another scheme,
  or a user or password in it, is refused before any connection. Redirects are not followed
  (they could lead the bearer token elsewhere).
* TLS is verified against the webhook's ``caBundle`` (PEM content, loaded in memory, never a
  path) or the system's CAs. No proxy from the operator's environment is used.
* The bearer token is the ``token`` key of the Secret ``secretRef`` names, in the policy's
  namespace; messages name the Secret, never the token.
* Bounded: connecting and the whole request by :class:`WebhookOptions`' timeouts, the answer
  read up to :attr:`WebhookOptions.response_max` bytes (more is not read, and a ticket id in it
  is not looked for).
* Retries only where the endpoint surely did not act: the connection could not be opened
  (refused, no route; not a TLS verification failure), or it answered 429 or 503 (busy: it
  did not process the request). A timeout or a broken connection after the request was sent
  is not retried: the ticket may exist. Every delivery of one notice carries the same
  ``Idempotency-Key`` header, so an endpoint that honours it drops duplicates.

The JSON documents (``event`` is ``Ticket`` or ``Escalated``)::

    {"event": "Ticket", "namespace": "fleet", "cluster": "prod-1", "machine": "m-17",
     "node": "node-17", "faultType": "KernelDeadlock", "remediation": "m-17-kerneldeadlock",
     "attempts": [{"step": 0, "action": "Reboot", "state": "TimedOut",
                   "startedAt": "...", "finishedAt": "...", "message": "..."}],
     "message": "..."}

``message`` is only in ``Escalated`` notices: why the ladder ended. A ticket endpoint may
answer a JSON object with ``id`` and/or ``url``: the Ticket action reports them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kokpit.providers.repair import RepairError, RepairTarget
from kokpit.providers.repair.notify import Escalation, NotifyError
from kokpit.providers.repair.secrets import SecretReader, SecretValueError, text_values

#: Statuses by which an endpoint says it did not process the request: retried.
RETRY_STATUSES = frozenset({429, 503})
#: How much of an error answer reaches a message.
ANSWER_SHOWN = 200


class WebhookError(RepairError):
    """A webhook could not be delivered."""

    reason = "WebhookFailed"


class WebhookNotConfigured(WebhookError):
    """The policy names no webhook for this (no ``spec.ticketWebhook`` for a Ticket)."""

    reason = "WebhookNotConfigured"


class WebhookInvalid(WebhookError):
    """The webhook's settings cannot be used: not https, a user or password in the URL, a
    caBundle that is not PEM certificates."""

    reason = "WebhookInvalid"


class WebhookCredentialsInvalid(WebhookError):
    """The token Secret is missing, or has no usable ``token``."""

    reason = "WebhookCredentialsInvalid"


class WebhookCertificateInvalid(WebhookError):
    """The endpoint's TLS certificate did not verify."""

    reason = "WebhookCertificateInvalid"


class WebhookUnreachable(WebhookError):
    """No answer: refused, no route, timed out, connection broken."""

    reason = "WebhookUnreachable"


class WebhookRejected(WebhookError):
    """The endpoint answered with an error status."""

    reason = "WebhookRejected"


@dataclass(frozen=True)
class WebhookOptions:
    #: Seconds to open the connection (TCP and TLS).
    connect_timeout: float = 10.0
    #: Seconds for one whole request, answer included.
    request_timeout: float = 30.0
    #: Bytes of the answer read at most.
    response_max: int = 64 * 1024
    #: Deliveries of one notice at most (see the module docstring for which are retried).
    attempts: int = 3
    #: Seconds before the first retry; doubled each time (a Retry-After up to
    #: :attr:`retry_after_max` wins).
    retry_delay: float = 1.0
    retry_after_max: float = 30.0


@dataclass(frozen=True)
class WebhookEndpoint:
    """A policy's Webhook, checked."""

    url: str
    ca_bundle: str | None = field(default=None, repr=False)
    secret: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, name: str) -> WebhookEndpoint:
        """``spec`` as stored (camelCase); ``name`` says which (``spec.ticketWebhook`` of
        RemediationPolicy ns/p) in messages."""
        url = spec.get("url")
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme != "https"
            or not parts.hostname
            or parts.username is not None
            or parts.password is not None
        ):
            raise WebhookInvalid(
                f"{name}: url must be an https URL without a user or password (plain http "
                "would send the token and the fault in clear)"
            )
        ca_bundle = spec.get("caBundle") or None
        if ca_bundle is not None:
            try:
                ssl.create_default_context(cadata=str(ca_bundle))
            except (ssl.SSLError, ValueError):
                raise WebhookInvalid(f"{name}: caBundle is not PEM certificates") from None
        secret = (spec.get("secretRef") or {}).get("name") or None
        return cls(str(url), ca_bundle, secret)

    @property
    def shown(self) -> str:
        """The URL as messages show it: scheme, host and path (no query: it may hold a key)."""
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(parts._replace(query="", fragment=""))


@dataclass(frozen=True)
class WebhookReply:
    status: int
    #: The answer as JSON, when it was a JSON document within the size bound.
    document: Any = None


def payload(event: str, target: RepairTarget, *, message: str | None = None) -> dict[str, Any]:
    """The JSON document for ``event`` (``Ticket`` or ``Escalated``) about ``target``."""
    document: dict[str, Any] = {
        "event": event,
        "namespace": target.namespace,
        "cluster": target.cluster_name,
        "machine": target.machine_name,
        "node": target.node_name,
        "faultType": target.fault_type,
        "remediation": target.remediation,
        "attempts": [
            {
                key: attempt[key]
                for key in ("step", "action", "state", "startedAt", "finishedAt", "message")
                if key in attempt
            }
            for attempt in target.attempts
        ],
    }
    if message is not None:
        document["message"] = message
    return document


def idempotency_key(event: str, target: RepairTarget) -> str:
    """The same for every delivery of one notice: the remediation, the event and the attempt
    it is about (the last one's step and start)."""
    last = target.attempts[-1] if target.attempts else {}
    parts = (target.namespace, target.remediation, event, last.get("step"), last.get("startedAt"))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def ticket_summary(reply: WebhookReply) -> str:
    """What the Ticket action reports: the ticket's id and URL when the answer gives them."""
    doc = reply.document if isinstance(reply.document, Mapping) else {}
    said = []
    ticket = doc.get("id")
    if isinstance(ticket, str | int) and _printable(str(ticket), 128):
        said.append(f"ticket {ticket}")
    url = doc.get("url")
    if (
        isinstance(url, str)
        and _printable(url, 2048)
        and urllib.parse.urlsplit(url).scheme in ("http", "https")
    ):
        said.append(url)
    return " ".join(said) if said else f"ticket requested (HTTP {reply.status})"


def _printable(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and text.isprintable()


class WebhookClient:
    """POSTs JSON documents to webhooks (see the module docstring). One per operator;
    :meth:`close` when done."""

    def __init__(self, *, secrets: SecretReader, options: WebhookOptions | None = None) -> None:
        self._secrets = secrets
        self.options = options or WebhookOptions()
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self,
        spec: Mapping[str, Any],
        document: Mapping[str, Any],
        *,
        namespace: str,
        name: str,
        idempotency_key: str,
    ) -> WebhookReply:
        """POST ``document`` to the webhook ``spec`` (as stored) of a policy in ``namespace``;
        ``name`` says which webhook in messages. Raises :class:`WebhookError`."""
        endpoint = WebhookEndpoint.from_spec(spec, name=name)
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        token = ""
        if endpoint.secret is not None:
            data = await self._secrets(namespace, endpoint.secret)
            if data is None:
                raise WebhookCredentialsInvalid(f"{name}: token Secret {endpoint.secret} not found")
            try:
                (token,) = text_values(data, ("token",), secret=endpoint.secret)
            except SecretValueError as e:
                raise WebhookCredentialsInvalid(f"{name}: {e}") from None
            headers["Authorization"] = f"Bearer {token}"
        # cadata None: the system's CAs; else the caBundle's and no others.
        context = ssl.create_default_context(cadata=endpoint.ca_bundle)
        body = json.dumps(document).encode()
        delay = self.options.retry_delay
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.options.attempts
            try:
                reply = await self._deliver(endpoint, body, headers, context)
            except aiohttp.ClientConnectorCertificateError as e:
                raise WebhookCertificateInvalid(
                    f"{name}: the TLS certificate of {endpoint.shown} is not trusted "
                    f"({_verify_reason(e)}); set caBundle to the CA that signs it"
                ) from None
            except aiohttp.ClientSSLError as e:
                raise WebhookUnreachable(
                    f"{name}: TLS with {endpoint.shown} failed: {type(e).__name__}"
                ) from None
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                # The connection never opened: the endpoint has not seen the request.
                if last:
                    why = "no connection within the timeout"
                    if isinstance(e, aiohttp.ClientConnectorError):
                        why = e.strerror or "connection refused"
                    raise WebhookUnreachable(
                        f"{name}: {endpoint.shown} cannot be reached: {why}"
                    ) from None
                pause = delay
            except TimeoutError:
                raise WebhookUnreachable(
                    f"{name}: {endpoint.shown} did not answer within "
                    f"{self.options.request_timeout:g} s (the request may have arrived; not "
                    "sent again)"
                ) from None
            except aiohttp.ClientError as e:
                raise WebhookUnreachable(
                    f"{name}: delivery to {endpoint.shown} broke off: {type(e).__name__} (the "
                    "request may have arrived; not sent again)"
                ) from None
            else:
                if 200 <= reply.status < 300:
                    return reply
                if reply.status not in RETRY_STATUSES or last:
                    raise WebhookRejected(
                        f"{name}: {endpoint.shown} answered HTTP {reply.status}"
                        + _said(reply.document, token)
                    )
                pause = delay
                if reply.retry_after is not None:
                    pause = min(reply.retry_after, self.options.retry_after_max)
            await asyncio.sleep(pause)
            delay *= 2

    async def _deliver(
        self,
        endpoint: WebhookEndpoint,
        body: bytes,
        headers: Mapping[str, str],
        context: ssl.SSLContext,
    ) -> _Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self.options.request_timeout, connect=self.options.connect_timeout
                ),
                trust_env=False,
            )
        async with self._session.post(
            endpoint.url, data=body, headers=headers, ssl=context, allow_redirects=False
        ) as response:
            raw = await _read_bounded(response, self.options.response_max)
            document: Any = None
            if raw is not None:
                try:
                    document = json.loads(raw)
                except ValueError:
                    document = raw.decode("utf-8", "replace")
            return _Answer(response.status, document, _retry_after(response))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True)
class _Answer(WebhookReply):
    retry_after: float | None = None


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _said(document: Any, token: str) -> str:
    """An error answer, short and printable, without the token (an endpoint may echo it)."""
    text = json.dumps(document) if isinstance(document, dict | list) else str(document or "")
    if token:
        text = text.replace(token, "***")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    if not text:
        return ""
    return f": {text[:ANSWER_SHOWN]}" + ("…" if len(text) > ANSWER_SHOWN else "")


def _verify_reason(error: aiohttp.ClientConnectorCertificateError) -> str:
    verify = getattr(error.certificate_error, "verify_message", None)
    return str(verify or "certificate verify failed")


class TicketRepairer:
    """The Ticket action: POSTs a ``Ticket`` document to the policy's ``spec.ticketWebhook``
    (:attr:`RepairTarget.policy`) and returns the ticket's id and URL when the answer has
    them."""

    actions = frozenset({"Ticket"})
    repeatable: frozenset[str] = frozenset()

    def __init__(self, client: WebhookClient) -> None:
        self._client = client

    async def repair(self, action: str, target: RepairTarget) -> str:
        if action not in self.actions:
            raise WebhookError(f"{action} is not the Ticket action")
        name = f"spec.ticketWebhook of RemediationPolicy {_policy_name(target)}"
        spec = (target.policy.get("spec") or {}).get("ticketWebhook")
        if not isinstance(spec, Mapping):
            raise WebhookNotConfigured(f"{name} is not set: no ticket system to ask")
        reply = await self._client.post(
            spec,
            payload("Ticket", target),
            namespace=target.namespace,
            name=name,
            idempotency_key=idempotency_key("Ticket", target),
        )
        return ticket_summary(reply)


class EscalationNotifier:
    """Tells a policy's ``spec.escalationWebhook`` that a remediation is Escalated: the
    :class:`~kokpit.providers.repair.notify.EscalationNotifier` of the Remediation workflow."""

    def __init__(self, client: WebhookClient) -> None:
        self._client = client

    async def escalated(self, escalation: Escalation) -> None:
        """POST an ``Escalated`` document to the escalation's webhook (the policy's
        ``spec.escalationWebhook`` as stored). Raises :class:`NotifyError` (its message fits an
        Event) when it could not be delivered; the remediation stays Escalated either way."""
        if escalation.webhook is None:
            return
        target = RepairTarget(
            namespace=escalation.namespace,
            machine={"metadata": {"name": escalation.machine}},
            node_name=escalation.node_name,
            cluster_name=escalation.cluster_name,
            fault_type=escalation.fault_type,
            remediation=escalation.remediation,
            policy={"metadata": {"name": escalation.policy}},
            attempts=escalation.attempts,
        )
        try:
            await self._client.post(
                escalation.webhook,
                payload("Escalated", target, message=escalation.message),
                namespace=target.namespace,
                name=f"spec.escalationWebhook of RemediationPolicy {_policy_name(target)}",
                idempotency_key=idempotency_key("Escalated", target),
            )
        except WebhookError as e:
            raise NotifyError(f"{e.reason}: {e}") from e


def _policy_name(target: RepairTarget) -> str:
    meta = target.policy.get("metadata") or {}
    return f"{target.namespace}/{meta.get('name', '?')}"
