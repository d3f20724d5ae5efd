"""The probe's metrics, in the runtime's registry (served on ``/metrics``).

``kokpit_probe_pod_creations_total{namespace,cluster,result,reason}``: probes by outcome;
``result`` is ``success`` or ``failure`` and ``reason`` says which (``Running`` for a success,
see :data:`~.prober.REASONS` for failures). A rollout's analysis divides the successes by all
of them over a window. ``kokpit_probe_pod_creation_duration_seconds{namespace,cluster}``: from
the create request to the pod seen Running, successes only (a failure's time is the timeout or
nothing: it would only blur the latency of the pods that did start).

``namespace`` and ``cluster`` are the Cluster's in the meta-cluster. Each cluster's series
exist, at zero, from its first probe on (for ``increase()``); a Cluster that is gone takes its
series with it, so a deleted cluster does not linger in sums.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from kokpit.runtime.metrics import REGISTRY

CREATIONS = Counter(
    "kokpit_probe_pod_creations",
    "Probe pods created in business clusters, by result (success, failure) and reason.",
    ["namespace", "cluster", "result", "reason"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "kokpit_probe_pod_creation_duration_seconds",
    "Seconds from a probe pod's create request to the pod seen Running (successes only).",
    ["namespace", "cluster"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 30.0, 60.0),
    registry=REGISTRY,
)
