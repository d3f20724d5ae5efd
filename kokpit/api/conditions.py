"""The one condition shape every kokpit status uses (Kubernetes' ``metav1.Condition``), and
the one setter every controller uses to write it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kokpit.api.schema import field

#: A qualified name: CamelCase, optionally behind a DNS prefix (``example.com/NetworkReady``).
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
#: What a condition's reason must look like.
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


#: The longest condition message the schema allows.
MESSAGE_MAX = 32768


@dataclass(kw_only=True)
class Condition:
    """An observation of one aspect of an object's state, as in the Kubernetes API conventions."""

    type: str = field(
        "The aspect this condition describes, in CamelCase (for example Ready).",
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
    )
    status: Literal["True", "False", "Unknown"] = field("Whether the condition holds.")
    reason: str = field(
        "A CamelCase word a program can switch on, saying why the condition is in this state.",
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
    )
    message: str = field("What happened, for a person.", max_length=MESSAGE_MAX)
    last_transition_time: str = field(
        "When the status last changed (not when the condition was last written).",
        format="date-time",
    )
    observed_generation: int | None = field(
        "The metadata.generation this condition was computed from; older means stale.",
        minimum=0,
        default=None,
    )


#: Condition types and reasons are declared next to the API types that use them.
READY = "Ready"


def now() -> str:
    """The current time in the API's format (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    """The condition of ``type_``, or None."""
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    c = get(conditions, type_)
    return c is not None and c.get("status") == "True"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | Literal["True", "False", "Unknown"],
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    at: str | None = None,
) -> list[dict[str, Any]]:
    """The one setter: a new list with ``type_`` set, ``Ready`` first, the rest sorted by type.

    ``lastTransitionTime`` moves only when the status flips, so it says how long the condition
    has held; ``observedGeneration`` is stamped on every write.
    """
    value = ("True" if status else "False") if isinstance(status, bool) else status
    old = get(conditions, type_)
    changed = old is None or old.get("status") != value
    new: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (at or now()) if changed else old["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        new["observedGeneration"] = generation
    rest = [c for c in conditions if c.get("type") != type_]
    return sorted([*rest, new], key=lambda c: (c["type"] != READY, c["type"]))


#: A condition as a condition function computes it: (type, status, reason, message); None when
#: the function did not judge it in this reconcile (the stored one is kept).
Computed = tuple[str, Literal["True", "False", "Unknown"], str, str] | None


def set_conditions(
    status: dict[str, Any], computed: Iterable[Computed], *, generation: int | None
) -> None:
    """Set every computed condition on ``status`` with :func:`set_condition` (messages cut to
    the schema's bound), in the order given; None keeps what was stored."""
    for condition in computed:
        if condition is None:
            continue
        type_, value, reason, message = condition
        status["conditions"] = set_condition(
            status.get("conditions") or [],
            type_,
            value,
            reason,
            message[:MESSAGE_MAX],
            generation=generation,
        )
