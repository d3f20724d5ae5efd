"""Telling people a remediation needs them: the seam between the Remediation workflow and
whatever carries the message (the escalation webhook of :mod:`kokpit.providers.repair.webhook`,
or a fake in tests).

The workflow calls the notifier when a remediation turns Escalated, after the state is stored;
a notifier that fails is reported (an Event) and never holds the escalation back. A notifier
may be called more than once for one escalation (an operator killed right after the call
calls it again): at least once, never zero times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Escalation:
    """What a person is told: which remediation gave up, on what, after which attempts."""

    namespace: str
    remediation: str
    machine: str
    node_name: str
    cluster_name: str
    fault_type: str
    policy: str
    #: Why the ladder ended and what a person can do, for the notice.
    message: str = ""
    #: The remediation's attempts as stored (step, action, state, message, times).
    attempts: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    #: The policy's ``escalationWebhook`` as stored (url, caBundle, secretRef): hostile input,
    #: validated by the API server; None when the policy names none.
    webhook: Mapping[str, Any] | None = field(default=None, repr=False)


class NotifyError(Exception):
    """The message could not be delivered; the text is for a person (an Event), never quoting
    a Secret."""


class EscalationNotifier(Protocol):
    async def escalated(self, escalation: Escalation) -> None:
        """Deliver ``escalation``; raises :class:`NotifyError` when it could not."""
        ...
