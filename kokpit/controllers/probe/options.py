"""The pod-creation probe's settings, each with its default and why."""

from __future__ import annotations

from dataclasses import dataclass

from kokpit.providers.controlplane.clients import PROBE_NAMESPACE

__all__ = ["PAUSE_IMAGE", "PROBE_LABEL", "PROBE_NAMESPACE", "ProbeOptions"]
#: The label on every probe pod: what an admission policy or a person selects them by.
PROBE_LABEL = "kokpit.io/probe"
#: The pause image: it does nothing, is small, and every node has it for its pod sandboxes.
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


@dataclass(frozen=True)
class ProbeOptions:
    #: Seconds between the starts of two probes of one cluster: often enough that a rollout's
    #: analysis over a minute sees several, rare enough to cost a cluster nothing (a create,
    #: a watch and a delete per period).
    period: float = 10.0
    #: A pod not Running this long after its create is a failed probe (Timeout). As long as a
    #: kubelet may take to start a pod whose image is present, with room for a busy scheduler.
    timeout: float = 30.0
    #: Clusters probed at once (each probe holds a watch on its cluster).
    concurrency: int = 16
    #: Where the probe pods are made, in every business cluster. The Cluster-Operator makes
    #: this namespace and grants kokpit's identity pods in it and nowhere else
    #: (kokpit/controllers/cluster/access.py): kokpit may not make namespaces there.
    namespace: str = PROBE_NAMESPACE
    image: str = PAUSE_IMAGE
    #: How long a pod may live before its kubelet ends it, should this process die before it
    #: deletes the pod (a real kubelet enforces it; the next start sweeps leftovers anyway).
    active_deadline_seconds: int = 60
