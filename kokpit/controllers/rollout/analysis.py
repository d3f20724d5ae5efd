"""One round of a rollout's analysis: every metric measured once, concurrently.

The measuring itself (querying Prometheus, judging the result against the conditions) is the
analysis provider's (:mod:`kokpit.providers.analysis`); the controller only needs something
that turns a metric into a verdict, which keeps it testable without a Prometheus.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Protocol

from kokpit.api.conditions import now

Object = dict[str, Any]
Phase = Literal["Successful", "Failed", "Error"]


class MetricReader(Protocol):
    """Measures one metric: (phase, value, message)."""

    async def measure(
        self,
        address: str,
        query: str,
        success_condition: str | None,
        failure_condition: str | None,
    ) -> tuple[Phase, float | None, str]: ...


async def measure_round(reader: MetricReader, analysis: Object) -> list[Object]:
    """Every metric of ``analysis`` measured once, as status measurements."""

    async def one(metric: Object) -> Object:
        phase, value, message = await reader.measure(
            analysis["prometheus"],
            metric["query"],
            metric.get("successCondition"),
            metric.get("failureCondition"),
        )
        taken: Object = {"metric": metric["name"], "phase": phase, "message": message[:1024]}
        if value is not None:
            taken["value"] = f"{value:g}"
        taken["at"] = now()
        return taken

    return list(await asyncio.gather(*(one(m) for m in analysis["metrics"])))
