"""One measurement of an analysis: a query's value judged by its conditions.

Argo Rollouts' semantics, so an AnalysisTemplate's author finds what they expect:

* the query gives no single number (:class:`~.prometheus.AnalysisError`) → ``Error``: the
  metric could not be judged, which is not the same as bad (the rollout's failure limit and
  its count of consecutive errors decide what to do about it);
* ``failure_condition`` holds → ``Failed`` (checked first: a value both good and bad is bad);
* ``success_condition`` given and not met → ``Failed``;
* otherwise → ``Successful``.

A malformed condition is an ``Error`` too (the API server refuses one first, with
:data:`~.condition.CONDITION_PATTERN`; this is the backstop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from kokpit.providers.analysis.condition import ConditionError, parse
from kokpit.providers.analysis.prometheus import AnalysisError

Phase = Literal["Successful", "Failed", "Error"]


class MetricSource(Protocol):
    """What a measurement reads: one query, one number (:class:`~.prometheus.PrometheusClient`)."""

    async def query(self, promql: str) -> float: ...


@dataclass(frozen=True)
class Measurement:
    phase: Phase
    #: The query's value (None when there was none: an ``Error`` of the query).
    value: float | None
    #: Why, for a person: the value and the condition that decided, or the error.
    message: str


async def measure(
    source: MetricSource,
    query: str,
    success_condition: str | None = None,
    failure_condition: str | None = None,
) -> Measurement:
    """Run ``query`` once and judge its value (see the module's docstring)."""
    try:
        success = parse(success_condition) if success_condition else None
        failure = parse(failure_condition) if failure_condition else None
    except ConditionError as e:
        return Measurement("Error", None, str(e))
    try:
        value = await source.query(query)
    except AnalysisError as e:
        return Measurement("Error", None, str(e))
    if failure is not None and failure.holds(value):
        return Measurement(
            "Failed", value, f"{value:g} meets the failure condition {failure_condition}"
        )
    if success is not None and not success.holds(value):
        return Measurement(
            "Failed", value, f"{value:g} does not meet the success condition {success_condition}"
        )
    if success is not None:
        return Measurement("Successful", value, f"{value:g} meets {success_condition}")
    if failure is not None:
        return Measurement("Successful", value, f"{value:g} does not meet {failure_condition}")
    return Measurement("Successful", value, f"{value:g} (no conditions)")
