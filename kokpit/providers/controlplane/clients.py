"""How an operator reaches the business clusters: one :class:`~kokpit.runtime.ClusterCache`
per process, acting as kokpit's own least-privilege identity in each cluster.

The kubeconfig is always the Secret the Cluster-Operator issues and controls for that
identity (the cache checks the Cluster owns it and its type), never one a Machine or a user
names; the API servers of the ``kubernetes`` runtime are meta-cluster Services, found through
:class:`~kokpit.runtime.services.ServiceAddresses` when DNS does not know them. Every
controller of a process shares the one cache: one connection, one health check and one
informer per scope and projection in each business cluster, however many controllers read it.
"""

from __future__ import annotations

from typing import Any

from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.api.v1alpha1.cluster import operator_kubeconfig_secret
from kokpit.runtime import ClusterCache, ClusterCacheOptions, Manager
from kokpit.runtime.services import ServiceAddresses

#: The namespace in every business cluster where kokpit's identity may run pods: the
#: pod-creation probe's (kokpit/controllers/probe). The Cluster-Operator makes it and grants
#: pods there (kokpit/controllers/cluster/access.py), so that identity needs neither namespaces
#: nor pods anywhere else.
PROBE_NAMESPACE = "kokpit-probe"


def kokpit_kubeconfig(cluster: dict[str, Any]) -> str:
    """The name of the Secret holding kokpit's own kubeconfig for ``cluster``."""
    return operator_kubeconfig_secret(cluster["metadata"]["name"])


def business_clusters(
    manager: Manager,
    *,
    qps: float = 50.0,
    burst: int = 100,
    health_interval: float = 10.0,
    watch_secrets: bool = True,
) -> ClusterCache:
    """The cache of every Cluster's business cluster, added to ``manager`` (it runs while
    this replica leads). ``watch_secrets=False`` for operators that may only *get* Secrets:
    they notice a rotated kubeconfig at the next health check instead of by a watch."""
    cache = ClusterCache(
        manager.client,
        manager.cache.informer(CLUSTERS),
        ClusterCacheOptions(
            secret_name=kokpit_kubeconfig,
            watch_secrets=watch_secrets,
            qps=qps,
            burst=burst,
            health_interval=health_interval,
            resolve=ServiceAddresses(manager.client),
        ),
    )
    manager.add(cache)
    return cache
