"""RiskPolicy: how often, how many at once and how much of a scope a risky action may touch.

Every operator asks the guard (:mod:`kokpit.providers.guard`) before a risky action (deleting a
node, draining it, rebooting, power-cycling, reinstalling or re-provisioning a host, a step of a
control-plane upgrade, a batch of a gray-scale rollout). Every policy that names the action
must allow it; a policy counts per scope: the whole fleet, each Cluster, or each failure domain
(the value of a node label such as ``topology.kubernetes.io/zone``). Within a scope it holds

- a rate limit: at most ``count`` grants per ``windowSeconds``;
- a maximum in flight: grants not yet reported done;
- a maximum share of the scope unavailable at once (its unavailable nodes and those in flight);
- a circuit breaker that opens on too many failures, and stays open until a person resets it
  (``kokpit risk reset``) or, where ``cooldownSeconds`` is set, lets one trial through after it;
- optionally an adaptive limit: one action at a time, doubled after each action that stays
  healthy for ``healthySeconds``, back to one on a failure.

What the guard has granted lives in the policy's RiskLedger (same name, see
:mod:`.riskledger`), changed with optimistic concurrency, so decisions hold across replicas and
operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api import names
from kokpit.api.schema import Kind, PrinterColumn, Rule, field

RiskyAction = Literal[
    "NodeDelete",
    "Drain",
    "Reboot",
    "PowerCycle",
    "Reinstall",
    "Reprovision",
    "ControlPlaneUpgradeStep",
    "RolloutBatch",
]
RiskScope = Literal["Fleet", "Cluster", "FailureDomain"]

#: A person's reset of a policy's breaker (or of a lost ledger): ``kokpit risk reset`` sets it
#: to a new value; the guard applies each value once.
RESET_ANNOTATION = "kokpit.io/risk-reset"


@dataclass(kw_only=True)
class RateLimit:
    """At most ``count`` grants per sliding window."""

    count: int = field("Grants allowed per window, per scope.", minimum=1, maximum=1000)
    window_seconds: int = field("The window's length.", minimum=1, maximum=604800)


@dataclass(kw_only=True)
class Breaker:
    """When the policy stops granting: too many failed actions in the window."""

    max_failures: int = field(
        "Failed actions within windowSeconds that open the breaker (a grant never reported "
        "done within holdSeconds counts as failed).",
        default=3,
        minimum=1,
        maximum=1000,
    )
    window_seconds: int = field(
        "The window failures are counted in.", default=3600, minimum=1, maximum=604800
    )
    cooldown_seconds: int | None = field(
        "After this long open, one trial action is let through (half-open): its success "
        "closes the breaker, its failure opens it again. Unset: open until a person resets it.",
        default=None,
        minimum=1,
        maximum=604800,
    )


@dataclass(kw_only=True)
class Adaptive:
    """Start with one action at a time; double the limit after each that stays healthy."""

    healthy_seconds: int = field(
        "How long an action must have succeeded, with no failure since, before the limit "
        "doubles (up to maxInFlight).",
        minimum=1,
        maximum=86400,
    )


@dataclass(kw_only=True)
class RiskPolicySpec:
    """Which risky actions, counted over which scope, and their budget."""

    actions: list[RiskyAction] = field(
        "The actions this policy governs.", min_items=1, max_items=7, list_type="set"
    )
    scope: RiskScope = field(
        "What a budget counts over: the whole Fleet, each Cluster, or each FailureDomain.",
        default="Fleet",
    )
    domain_label: str | None = field(
        "For scope FailureDomain: the node label whose value names the domain, such as "
        "topology.kubernetes.io/zone.",
        default=None,
        max_length=names.QUALIFIED_NAME_MAX,
        rules=(
            Rule(
                names.is_qualified_name("self"),
                f"domainLabel must be a label key: {names.QUALIFIED_NAME_RULES}",
            ),
        ),
    )
    rate_limit: RateLimit | None = field("At most count grants per window.", default=None)
    max_in_flight: int | None = field(
        "Grants not yet reported done, per scope.", default=None, minimum=1, maximum=10000
    )
    max_unavailable_percent: int | None = field(
        "Share of a scope's nodes that may be unavailable at once, counting those in flight.",
        default=None,
        minimum=0,
        maximum=100,
    )
    breaker: Breaker | None = field("When to stop granting altogether.", default=None)
    adaptive: Adaptive | None = field(
        "Grow the in-flight limit from one as actions prove healthy.", default=None
    )
    hold_seconds: int = field(
        "How long a grant counts in flight when its caller never reports it done; then it "
        "is counted as failed.",
        default=3600,
        minimum=10,
        maximum=604800,
    )
    dry_run: bool = field(
        "Decide and record as usual, but allow every action (to try a policy out).",
        default=False,
    )
    __rules__ = (
        Rule(
            "self.scope != 'FailureDomain' || has(self.domainLabel)",
            "scope FailureDomain needs spec.domainLabel: the node label naming the domain",
        ),
        Rule(
            "!has(self.adaptive) || has(self.maxInFlight)",
            "spec.adaptive needs spec.maxInFlight: the limit it grows to",
        ),
        Rule(
            "has(self.rateLimit) || has(self.maxInFlight) || has(self.maxUnavailablePercent)"
            " || has(self.breaker)",
            "a policy needs at least one of rateLimit, maxInFlight, maxUnavailablePercent, breaker",
        ),
    )


@dataclass(kw_only=True)
class RiskPolicyStatus:
    """Written by the guard: which ledger holds this policy's budget."""

    ledger_uid: str | None = field(
        "The uid of the RiskLedger the guard keeps for this policy. A ledger of another uid, "
        "or none while this is set, means the budget was lost: the guard allows nothing "
        "until a person resets the policy.",
        default=None,
    )
    reset: str | None = field(
        "The last value of the kokpit.io/risk-reset annotation the guard applied.",
        default=None,
    )


RISK_POLICY = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="RiskPolicy",
    plural="riskpolicies",
    spec=RiskPolicySpec,
    status=RiskPolicyStatus,
    scope="Cluster",
    short_names=("riskp",),
    description="RiskPolicy is the budget of some risky actions: rate, in flight, breaker.",
    printer_columns=(
        PrinterColumn("Actions", ".spec.actions"),
        PrinterColumn("Scope", ".spec.scope"),
        PrinterColumn("Dry-Run", ".spec.dryRun", type="boolean"),
    ),
)
