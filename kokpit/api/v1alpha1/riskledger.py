"""RiskLedger: what the guard has granted under one RiskPolicy, and its breaker.

One per RiskPolicy, of the same name, owned by it; written only by the guard, with optimistic
concurrency (every write names the resourceVersion it read), so two replicas or two operators
deciding at once never both spend the last of a budget. Entries older than their window are
dropped at each write, so a ledger stays small.

The guard fails closed: a policy whose ledger was deleted, or belongs to another policy of the
same name, allows nothing until a person resets it (``kokpit risk reset``) — a budget that
could be reset by deleting an object would be no budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api.schema import Kind, PrinterColumn, Rule, field
from kokpit.api.v1alpha1.riskpolicy import RiskyAction

BreakerState = Literal["Closed", "Open", "HalfOpen"]

#: How many decisions a ledger keeps for people to read (every one is also an Event).
DECISIONS_MAX = 50


@dataclass(kw_only=True)
class Hold:
    """A grant not yet reported done."""

    id: str = field("The caller's key for this action (asking again with it is a no-op).")
    action: RiskyAction = field("The action.")
    target: str = field("What it acts on, such as Machine fleet/rack1-node7.")
    requester: str = field("Who asked.")
    since: str = field("When it was granted.", format="date-time")


@dataclass(kw_only=True)
class BreakerStatus:
    state: BreakerState = field("Closed: granting; Open: not; HalfOpen: one trial.")
    since: str | None = field("When it entered this state.", default=None, format="date-time")
    reason: str | None = field("Why it opened.", default=None)


@dataclass(kw_only=True)
class ScopeLedger:
    """The budget spent in one scope."""

    key: str = field("The scope: * (fleet), namespace/cluster, or the failure domain's value.")
    grants: list[str] = field("When each grant of the rate window was made.", default_factory=list)
    in_flight: list[Hold] = field("Grants not yet reported done.", default_factory=list)
    failures: list[str] = field(
        "When each failure of the breaker's window was reported.", default_factory=list
    )
    successes: list[str] = field(
        "Successes not yet healthy for long enough to grow the adaptive limit.",
        default_factory=list,
    )
    limit: int | None = field("The adaptive in-flight limit now.", default=None, minimum=1)
    breaker: BreakerStatus | None = field("The breaker.", default=None)


@dataclass(kw_only=True)
class Decision:
    """One answer of the guard."""

    at: str = field("When.", format="date-time")
    id: str = field("The caller's key.")
    action: RiskyAction = field("The action asked for.")
    target: str = field("What it would act on.")
    requester: str = field("Who asked.")
    allowed: bool = field("The answer.")
    reason: str = field("Why.")


@dataclass(kw_only=True)
class RiskLedgerSpec:
    policy_uid: str = field(
        "The uid of the RiskPolicy (same name) this ledger counts for.",
        rules=(Rule("self == oldSelf", "a ledger never changes policy"),),
    )


@dataclass(kw_only=True)
class RiskLedgerStatus:
    scopes: list[ScopeLedger] = field(
        "The budget spent, per scope.",
        default_factory=list,
        list_type="map",
        list_map_keys=("key",),
    )
    decisions: list[Decision] = field(
        f"The last {DECISIONS_MAX} decisions, newest last.", default_factory=list
    )


RISK_LEDGER = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="RiskLedger",
    plural="riskledgers",
    spec=RiskLedgerSpec,
    status=RiskLedgerStatus,
    scope="Cluster",
    short_names=("riskl",),
    description="RiskLedger is what the guard granted under the RiskPolicy of its name.",
    printer_columns=(
        PrinterColumn("Scopes", ".status.scopes[*].key"),
        PrinterColumn("Breakers", ".status.scopes[*].breaker.state"),
    ),
)
