"""One round of a rollout's analysis: every metric measured once, concurrently.

The measuring itself (querying Prometheus, judging the result against the conditions) is the
analysis provider's (:mod:`kokpit.providers.analysis`); the controller only needs something
that turns a metric into a verdict, which keeps it testable without a Prometheus.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from kokpit.api.conditions import now
from kokpit.providers.analysis import Measurement

Object = dict[str, Any]


class MetricReader(Protocol):
    """Measures one metric (:class:`kokpit.providers.analysis.PrometheusReader`)."""

    async def measure(
        self,
        address: str,
        query: str,
        success_condition: str | None,
        failure_condition: str | None,
    ) -> Measurement: ...


async def measure_round(reader: MetricReader, analysis: Object) -> list[Object]:
    """Every metric of ``analysis`` measured once, as status measurements."""

    async def one(metric: Object) -> Object:
        result = await reader.measure(
            analysis["prometheus"],
            metric["query"],
            metric.get("successCondition"),
            metric.get("failureCondition"),
        )
        taken: Object = {
            "metric": metric["name"],
            "phase": result.phase,
            "message": result.message[:1024],
        }
        if result.value is not None:
            taken["value"] = f"{result.value:g}"
        taken["at"] = now()
        return taken

    return list(await asyncio.gather(*(one(m) for m in analysis["metrics"])))
