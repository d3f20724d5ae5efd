"""The embedded local meta-cluster: a real Kubernetes control plane on one machine.

kokpit builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok
(and, for real nodes, the kubelet, kube-proxy, pause and CoreDNS) from their Go modules
(:mod:`.build`, cached by :mod:`.assets`), and runs them as local processes (:mod:`.cluster`)
with simulated nodes (:mod:`.nodes`) and, on request, real nodes that run containers
(:mod:`.realnode`, images from :mod:`.images`, the machine put back by :mod:`.host`).
Operators are developed and tested against it; ``make demo`` runs on it.
"""

from kokpit.local.assets import Assets, AssetsError, CorruptAssetsError
from kokpit.local.build import ensure as ensure_assets
from kokpit.local.cluster import AlreadyRunningError, ClusterError, ClusterStatus, LocalCluster
from kokpit.local.components import Settings
from kokpit.local.kubectl import Kubectl, KubectlError
from kokpit.local.supervisor import ComponentFailedError, Supervisor
from kokpit.local.versions import DEFAULT_RELEASE, RELEASES, Release, UnknownReleaseError, release

__all__ = [
    "DEFAULT_RELEASE",
    "RELEASES",
    "AlreadyRunningError",
    "Assets",
    "AssetsError",
    "ClusterError",
    "ClusterStatus",
    "ComponentFailedError",
    "CorruptAssetsError",
    "Kubectl",
    "KubectlError",
    "LocalCluster",
    "Release",
    "Settings",
    "Supervisor",
    "UnknownReleaseError",
    "ensure_assets",
    "release",
]
