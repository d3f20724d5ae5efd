"""The pod-creation probe: kokpit's business metric for rollouts (docs/risk-control.md).

Every period it creates a small pod in each business cluster and counts whether it ran and
how fast, on the process's ``/metrics``, for Prometheus to scrape and a rollout's analysis to
query. It runs as ``kokpit operator probe`` (config/rbac/probe-operator.yaml).
"""

from __future__ import annotations

from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.controllers.probe.options import PROBE_LABEL, PROBE_NAMESPACE, ProbeOptions
from kokpit.controllers.probe.prober import REASONS, Outcome, PodProbe
from kokpit.runtime import ClusterCache, Manager

__all__ = [
    "PROBE_LABEL",
    "PROBE_NAMESPACE",
    "REASONS",
    "Outcome",
    "PodProbe",
    "ProbeOptions",
    "setup",
]


def setup(
    manager: Manager, clusters: ClusterCache, options: ProbeOptions | None = None
) -> PodProbe:
    """Add the probe to ``manager``; business clusters are reached through ``clusters`` (the
    process's one cache, see :func:`kokpit.providers.controlplane.clients.business_clusters`)."""
    probe = PodProbe(manager.cache.informer(CLUSTERS), clusters, options or ProbeOptions())
    manager.add(probe)
    return probe
