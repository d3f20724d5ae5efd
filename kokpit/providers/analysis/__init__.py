"""Analysis of business metrics for gray-scale rollouts: Prometheus queries judged by success
and failure conditions, in the spirit of Argo Rollouts' AnalysisTemplate.

- :mod:`.condition`: the tiny condition language (``result >= 0.95 && result <= 1``) and the
  pattern the API server checks it with;
- :mod:`.prometheus`: instant queries reduced to one number, every other answer an
  :class:`AnalysisError` with a message a person understands;
- :mod:`.measure`: one measurement, ``Successful``, ``Failed`` or ``Error``;
- :mod:`.reader`: measurements against the servers rollouts name, one client each.
"""

from kokpit.providers.analysis.condition import (
    CONDITION_PATTERN,
    Condition,
    ConditionError,
    evaluate,
    parse,
)
from kokpit.providers.analysis.measure import Measurement, MetricSource, Phase, measure
from kokpit.providers.analysis.prometheus import AnalysisError, PrometheusClient, PrometheusOptions
from kokpit.providers.analysis.reader import PrometheusReader

__all__ = [
    "CONDITION_PATTERN",
    "AnalysisError",
    "Condition",
    "ConditionError",
    "Measurement",
    "MetricSource",
    "Phase",
    "PrometheusClient",
    "PrometheusOptions",
    "PrometheusReader",
    "evaluate",
    "measure",
    "parse",
]
