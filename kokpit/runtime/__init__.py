"""kokpit's controller runtime: client-go / controller-runtime semantics on asyncio.

- :mod:`.config`, :mod:`.client`: reach the API server; any resource as plain dicts; typed
  :mod:`.errors`; QPS limit; retries that honour 429 Retry-After.
- :mod:`.informer`, :mod:`.store`: shared LIST+WATCH caches with indexes, resuming watches
  and relisting with a diff on 410.
- :mod:`.queue`: the deduplicating, rate-limited work queue.
- :mod:`.controller`: watches → keys → ``reconcile(request) -> Result``; :mod:`.patch` writes
  what a reconcile changed in one metadata and one status patch; :mod:`.events` records
  deduplicated Events.
- :mod:`.reconcile`: the outline every operator's reconcile follows (finalizer, phases, one
  status write, Events after it); :mod:`.memory`: what a process may remember to save work.
- :mod:`.clustercache`: a client and shared informers per business cluster, from the
  kubeconfig Secret issued for its Cluster; rebuilt on rotation, health-checked, torn down.
- :mod:`.leader`, :mod:`.manager`: Lease leader election; runs everything with health and
  Prometheus metrics (:mod:`.metrics`, client-go's and controller-runtime's names).

No business logic lives here.
"""

from kokpit.runtime.client import Client, ObjectList, PatchType, RetryPolicy, WatchEvent
from kokpit.runtime.clustercache import (
    ClusterAccessor,
    ClusterCache,
    ClusterCacheOptions,
    ClusterNotReady,
    ClusterUnreachable,
    ClusterWatch,
)
from kokpit.runtime.config import ClientConfig, ConfigError
from kokpit.runtime.controller import (
    Controller,
    ControllerOptions,
    EventSource,
    Reconciler,
    Request,
    Result,
    TerminalError,
    for_object,
    for_owner,
    generation_changed,
)
from kokpit.runtime.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    TooManyRequests,
)
from kokpit.runtime.events import EventRecorder
from kokpit.runtime.informer import Cache, Informer, Scope, strip_unneeded
from kokpit.runtime.leader import LeaderElectionConfig, LeaderElector, LeadershipLost
from kokpit.runtime.manager import Manager, ManagerOptions, Runnable
from kokpit.runtime.memory import Backoff, Recently
from kokpit.runtime.patch import PatchHelper, merge_patch
from kokpit.runtime.queue import RateLimit, WorkQueue
from kokpit.runtime.reconcile import (
    ObjectReconciler,
    ObjectScope,
    Outline,
    Phase,
    controlled_by,
    owner_reference,
)
from kokpit.runtime.resources import Resource
from kokpit.runtime.store import Store, by_field, by_label, object_key

__all__ = [
    "AlreadyExists",
    "ApiError",
    "Backoff",
    "Cache",
    "Client",
    "ClientConfig",
    "ClusterAccessor",
    "ClusterCache",
    "ClusterCacheOptions",
    "ClusterNotReady",
    "ClusterUnreachable",
    "ClusterWatch",
    "ConfigError",
    "Conflict",
    "Controller",
    "ControllerOptions",
    "EventRecorder",
    "EventSource",
    "Forbidden",
    "Gone",
    "Informer",
    "Invalid",
    "LeaderElectionConfig",
    "LeaderElector",
    "LeadershipLost",
    "Manager",
    "ManagerOptions",
    "NotFound",
    "ObjectList",
    "ObjectReconciler",
    "ObjectScope",
    "Outline",
    "PatchHelper",
    "PatchType",
    "Phase",
    "RateLimit",
    "Recently",
    "Reconciler",
    "Request",
    "Resource",
    "Result",
    "RetryPolicy",
    "Runnable",
    "Scope",
    "ServerError",
    "Store",
    "TerminalError",
    "TooManyRequests",
    "WatchEvent",
    "WorkQueue",
    "by_field",
    "by_label",
    "controlled_by",
    "for_object",
    "for_owner",
    "generation_changed",
    "merge_patch",
    "object_key",
    "owner_reference",
    "strip_unneeded",
]
