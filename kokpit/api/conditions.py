"""The one condition shape every kokpit status uses: Kubernetes' ``metav1.Condition``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api.schema import field


@dataclass
class Condition:
    """An observation of one aspect of an object's state, as in the Kubernetes API conventions."""

    type: str = field(
        "The aspect this condition describes, in CamelCase (for example Ready).",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: Literal["True", "False", "Unknown"] = field("Whether the condition holds.")
    reason: str = field(
        "A CamelCase word a program can switch on, saying why the condition is in this state.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = field("What happened, for a person.", max_length=32768)
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
