"""Rollout: a change of package version moved across many Machines or Clusters in batches.

A Rollout selects Machines (or Clusters) of its namespace by label and moves them to one
MachinePackageVersion (or ClusterPackageVersion), a batch at a time. The first batch is the
canary. For each batch the Rollout-Operator

1. checks the scope's health first: at most ``healthCheck.maxUnavailable`` of the selected
   objects may be not Ready (otherwise it waits, saying so);
2. applies: sets ``spec.packageVersion`` on each object of the batch, recording on the object,
   in the same write, the annotation :data:`CHANGE_ANNOTATION` (which Rollout changed it, in
   which batch, and from which version), so that a restarted operator knows exactly which
   objects it changed and never changes one twice;
3. checks health after: every object of the batch Ready at the new version within
   ``healthCheck.timeoutSeconds`` (a Machine whose step failed, or a Cluster whose keeper
   rolled it back, fails the batch at once);
4. runs the analysis, if any: Prometheus queries measured ``count`` times every
   ``intervalSeconds``, each against its success and failure conditions;
5. waits ``pauseSeconds``, or for a person's ``resume`` where the batch has a manual gate.

A failed batch aborts the rollout: every object it changed is returned to the version recorded
in its annotation (the keepers' rollback), and the conditions and Events say why. A person
commands a rollout through the annotation :data:`COMMAND_ANNOTATION` (``kokpit rollout
pause|resume|retry|skip|abort``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api import names
from kokpit.api.conditions import Condition
from kokpit.api.schema import Kind, PrinterColumn, Rule, field
from kokpit.api.v1alpha1.selector import LabelSelector

RolloutPhase = Literal["Progressing", "Paused", "Succeeded", "RollingBack", "Aborted"]
BatchState = Literal[
    "Pending", "Waiting", "Verifying", "Analyzing", "Pausing", "Succeeded", "Failed", "Skipped"
]
MeasurementPhase = Literal["Successful", "Failed", "Error"]

#: Set on every object a Rollout changed, in the write that changes it:
#: ``<rollout uid>/<attempt>/<batch>/<previous packageVersion>`` (the attempt counts the
#: rollout's retries after an abort: marks of an earlier attempt are history).
CHANGE_ANNOTATION = "kokpit.io/rollout"
#: A person's command: pause, resume, retry, skip or abort (see :mod:`kokpit.cli.rollout`).
COMMAND_ANNOTATION = "kokpit.io/rollout-command"
COMMANDS = ("pause", "resume", "retry", "skip", "abort")

#: How many measurements a batch's status keeps (the newest).
MEASUREMENTS_MAX = 20

# Condition types.
PROGRESSING = "Progressing"
SCOPE_HEALTHY = "ScopeHealthy"
ANALYSIS_PASSING = "AnalysisPassing"
ROLLED_BACK = "RolledBack"

#: A batch size: a count, or a percentage of the objects the rollout selected at its start.
BATCH_SIZE_PATTERN = r"^([1-9][0-9]{0,4}|([1-9][0-9]?|100)%)$"
#: The condition language of an analysis (see :mod:`kokpit.providers.analysis.condition`):
#: comparisons of ``result`` with a number, joined by ``&&`` and ``||``. One pattern that RE2
#: (CEL's ``matches``) and Python read alike, with no backslash, so it goes into a CEL string
#: as it is; the operator parses exactly what the API server let through.
CONDITION_NUMBER = r"-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?"
CONDITION_OPERATOR = r"(>=|<=|==|!=|>|<)"
_COMPARISON = rf" *result *{CONDITION_OPERATOR} *{CONDITION_NUMBER} *"
CONDITION_PATTERN = rf"^{_COMPARISON}((&&|[|][|]){_COMPARISON})*$"
#: The longest condition accepted.
CONDITION_MAX_LENGTH = 256


@dataclass(kw_only=True)
class Target:
    """What moves: which objects, and to which package version."""

    kind: Literal["Machine", "Cluster"] = field(
        "Machines (moved to a MachinePackageVersion) or Clusters (to a ClusterPackageVersion)."
    )
    selector: LabelSelector = field(
        "The objects of the Rollout's namespace that move; an empty selector takes them all."
    )
    package_version: str = field(
        "The package version they move to.",
        min_length=1,
        max_length=names.SUBDOMAIN_MAX,
        rules=(
            Rule(
                f"self.matches('{names.DNS1123_SUBDOMAIN}')",
                f"must be the name of a package version: {names.SUBDOMAIN_RULES}",
            ),
        ),
    )


@dataclass(kw_only=True)
class Batch:
    """One step of the rollout. The first batch is the canary; the last takes every object
    still left, whatever its size."""

    size: str = field(
        "How many objects the batch moves: a count (5) or a share of the objects selected when "
        "the rollout started (25%, rounded up).",
        max_length=5,
        rules=(
            Rule(
                f"self.matches(r'{BATCH_SIZE_PATTERN}')",
                "must be a count from 1 to 99999 (such as 5) or a percentage from 1% to 100% "
                "(such as 25%)",
            ),
        ),
    )
    pause_seconds: int = field(
        "How long to wait once the batch passed, before the next starts.",
        default=0,
        minimum=0,
        maximum=86400,
    )
    manual_gate: bool = field(
        "Once the batch passed, wait for a person's resume (kokpit rollout resume) before the "
        "next starts.",
        default=False,
    )


@dataclass(kw_only=True)
class HealthCheck:
    """When the scope is healthy enough to go on."""

    max_unavailable: int = field(
        "How many of the selected objects may be not Ready when a batch starts; with more, "
        "the rollout waits.",
        default=0,
        minimum=0,
        maximum=100000,
    )
    timeout_seconds: int = field(
        "How long a batch's objects have to be Ready at the new version; then the batch fails.",
        default=600,
        minimum=1,
        maximum=86400,
    )


@dataclass(kw_only=True)
class Metric:
    """One Prometheus query and what its result must be."""

    name: str = field(
        "The metric's name, as the status reports it.",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    )
    query: str = field(
        "A PromQL query giving one number (a scalar or a vector of one sample).",
        min_length=1,
        max_length=4096,
    )
    success_condition: str | None = field(
        "A measurement fails unless this holds, such as 'result >= 0.99'.",
        default=None,
        max_length=CONDITION_MAX_LENGTH,
        rules=(
            Rule(
                f"self.matches('{CONDITION_PATTERN}')",
                "must compare result with a number, such as 'result >= 0.99' (joined by && "
                "or || for several)",
            ),
        ),
    )
    failure_condition: str | None = field(
        "A measurement fails when this holds, such as 'result > 2.5'.",
        default=None,
        max_length=CONDITION_MAX_LENGTH,
        rules=(
            Rule(
                f"self.matches('{CONDITION_PATTERN}')",
                "must compare result with a number, such as 'result > 2.5' (joined by && or "
                "|| for several)",
            ),
        ),
    )
    __rules__ = (
        Rule(
            "has(self.successCondition) || has(self.failureCondition)",
            "a metric needs a successCondition, a failureCondition, or both",
        ),
    )


@dataclass(kw_only=True)
class Analysis:
    """Business metrics measured after each batch is healthy, in the spirit of Argo Rollouts'
    AnalysisTemplate."""

    prometheus: str = field(
        "The Prometheus server's base URL (such as http://prometheus.monitoring:9090).",
        max_length=2048,
        rules=(
            Rule(
                "isURL(self) && url(self).getScheme() in ['http', 'https']",
                "must be an http or https URL such as http://prometheus.monitoring:9090",
            ),
        ),
    )
    interval_seconds: int = field(
        "Time between two measurements.", default=30, minimum=1, maximum=3600
    )
    count: int = field(
        "Measurements per batch (of every metric).", default=3, minimum=1, maximum=100
    )
    failure_limit: int = field(
        "Failed measurements tolerated per batch; one more aborts the rollout. Measurements "
        "that could not be taken (Prometheus unreachable, no data) are counted apart: one more "
        "than this pauses the rollout for a person.",
        default=0,
        minimum=0,
        maximum=100,
    )
    metrics: list[Metric] = field(
        "The queries.",
        min_items=1,
        max_items=16,
        list_type="map",
        list_map_keys=("name",),
    )


@dataclass(kw_only=True)
class Approval:
    """When a rollout's blast radius is large enough that a person must approve it first."""

    above_objects: int | None = field(
        "A rollout moving more objects than this waits for a person's approval (kokpit "
        "rollout resume) before its first batch.",
        default=None,
        minimum=0,
    )
    above_clusters: int | None = field(
        "A rollout touching more business clusters than this waits for a person's approval.",
        default=None,
        minimum=0,
    )


@dataclass(kw_only=True)
class RolloutSpec:
    """The change and how carefully it moves. The target never changes: a new change is a new
    Rollout."""

    target: Target = field("What moves, and to which version.")
    batches: list[Batch] = field("The batches, canary first.", min_items=1, max_items=32)
    health_check: HealthCheck = field(
        "Health before and after each batch.", default_factory=HealthCheck
    )
    analysis: Analysis | None = field(
        "Business metrics checked after each batch; unset: none.", default=None
    )
    approval: Approval | None = field(
        "When a person must approve the rollout before it starts; unset: never.", default=None
    )
    __rules__ = (Rule("self.target == oldSelf.target", "a Rollout's target never changes"),)


@dataclass(kw_only=True)
class Measurement:
    """One measurement of one metric."""

    metric: str = field("The metric's name.")
    phase: MeasurementPhase = field("Successful, Failed, or Error (not measured).")
    value: str | None = field("The result, when there was one.", default=None)
    message: str = field("Why it failed or could not be taken.", default="", max_length=1024)
    at: str = field("When it was taken.", format="date-time")


@dataclass(kw_only=True)
class BatchStatus:
    """What happened to one batch."""

    index: int = field("The batch (0 is the canary).", minimum=0)
    state: BatchState = field(
        "Pending, Waiting (for a healthy scope), Verifying (its objects becoming Ready), "
        "Analyzing, Pausing (its pause or manual gate), Succeeded, Failed, or Skipped (a "
        "person passed it)."
    )
    size: int = field("How many objects it moves.", minimum=0)
    changed: int = field("Objects it changed so far.", default=0, minimum=0)
    ready: int = field("Of those, Ready at the new version.", default=0, minimum=0)
    started_at: str | None = field(
        "When its objects were changed; the health timeout counts from here.",
        default=None,
        format="date-time",
    )
    analysis_started_at: str | None = field(
        "When its analysis started; measurements are due from here.",
        default=None,
        format="date-time",
    )
    finished_at: str | None = field(
        "When it passed or failed; its pause counts from here.", default=None, format="date-time"
    )
    message: str = field("Why it failed or waits.", default="", max_length=4096)
    approved: bool = field("A person resumed it past its manual gate.", default=False)
    skipped: bool = field(
        "A person skipped its remaining checks (kokpit rollout skip).", default=False
    )
    measured: int = field("Analysis rounds taken.", default=0, minimum=0)
    failed_measurements: int = field("Measurements that failed.", default=0, minimum=0)
    error_measurements: int = field("Measurements not taken.", default=0, minimum=0)
    measurements: list[Measurement] = field(
        "The analysis' measurements (the newest kept).",
        default_factory=list,
        max_items=MEASUREMENTS_MAX,
    )


@dataclass(kw_only=True)
class Assessment:
    """The risk of the change, assessed before its first batch."""

    objects: int = field("Objects it moves.", minimum=0)
    clusters: int = field(
        "Business clusters affected: those of the Machines moved, or the Clusters moved.",
        minimum=0,
    )
    nodes: int = field("Nodes among the Machines moved (those joined to a cluster).", minimum=0)
    not_ready: int = field("Selected objects not Ready when it was assessed.", minimum=0)
    guard: str = field(
        "What the guard says of the first batch now (a dry run of RolloutBatch).",
        default="",
        max_length=1024,
    )
    decision: Literal["Allow", "NeedsApproval", "Deny"] = field(
        "Allow; NeedsApproval (over spec.approval: waits for a person's resume); or Deny (the "
        "guard refuses now: the first batch waits for it)."
    )
    reason: str = field("Why.", default="", max_length=1024)
    assessed_at: str = field("When.", format="date-time")


@dataclass(kw_only=True)
class RolloutStatus:
    """Where the rollout is."""

    phase: RolloutPhase | None = field(
        "Progressing, Paused (by a person or an analysis that could not measure), Succeeded, "
        "RollingBack (aborted: returning what it changed), or Aborted (done returning).",
        default=None,
    )
    observed_generation: int | None = field("The generation last reconciled.", default=None)
    total: int | None = field(
        "Objects selected when the rollout started, that were not at the version yet; "
        "percentages of batch sizes are of this.",
        default=None,
        minimum=0,
    )
    paused_reason: (
        Literal["PausedByPerson", "NeedsApproval", "AwaitingApproval", "AnalysisInconclusive"]
        | None
    ) = field(
        "Why it is Paused: a person paused it, its blast radius needs a person's approval, a "
        "batch's manual gate, or an analysis that could not measure.",
        default=None,
    )
    assessment: Assessment | None = field(
        "The change's blast radius, the scope's health and the guard's budget, assessed at "
        "the start.",
        default=None,
    )
    attempt: int = field(
        "Which run of the rollout this is: a retry after an abort starts the next.",
        default=0,
        minimum=0,
    )
    current_batch: int = field("The batch in progress.", default=0, minimum=0)
    updated: int = field("Objects changed by this rollout so far.", default=0, minimum=0)
    batches: list[BatchStatus] = field(
        "Each batch started so far.", default_factory=list, max_items=32
    )
    abort_reason: str | None = field("Why the rollout was aborted.", default=None, max_length=4096)
    aborted_at: str | None = field(
        "When it was aborted; the rollback's health timeout counts from here.",
        default=None,
        format="date-time",
    )
    conditions: list[Condition] = field(
        "Progressing, ScopeHealthy, AnalysisPassing, RolledBack.",
        default_factory=list,
        list_type="map",
        list_map_keys=("type",),
    )


ROLLOUT = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="Rollout",
    plural="rollouts",
    spec=RolloutSpec,
    status=RolloutStatus,
    short_names=("ro",),
    description="Rollout moves Machines or Clusters to a package version in batches.",
    printer_columns=(
        PrinterColumn("Kind", ".spec.target.kind"),
        PrinterColumn("Version", ".spec.target.packageVersion"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Batch", ".status.currentBatch", type="integer"),
        PrinterColumn("Updated", ".status.updated", type="integer"),
        PrinterColumn("Total", ".status.total", type="integer"),
        PrinterColumn("Age", ".metadata.creationTimestamp", type="date"),
    ),
)
