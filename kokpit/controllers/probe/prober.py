"""The pod-creation probe: can each business cluster start a pod now, and how fast?

A rollout's analysis needs a business metric that a bad change moves: a broken kubelet, a
scheduler that cannot place, an admission webhook that refuses, an API server that does not
answer all make pod creation fail or slow down. So every ``period``, for each Cluster that has
a control plane (:func:`~.pod.probed`), one probe:

    create a probe pod (kokpit's own identity, through the process's ClusterCache)
      → watch it until it is Running, at most ``timeout`` from the create
      → count success (and its latency) or failure (with a reason) → delete the pod

Invariants:

* **One probe per cluster at a time.** A cluster whose last probe is still running (a slow
  one, up to ``timeout``) is skipped this period rather than probed twice: the count stays
  one probe per period at most, and a slow cluster never piles up pods.
* **Bounded.** At most ``concurrency`` clusters are probed at once; the others wait for a
  slot (late, not lost).
* **Nothing a cluster does stops the loop.** Every failure of a cluster, including ones
  nobody foresaw, is a counted failure with a reason and a log line, never a crash; only
  cancellation (losing the leadership, stopping) ends the probes.
* **Hostile input.** A Cluster's name is a label value and a log field, nothing else; its
  kubeconfig comes only from the Secret the ClusterCache trusts, and reasons never quote it.
* **Clean up.** Each pod is deleted after its probe; pods a crashed process left behind are
  deleted at the first probe of each cluster after a start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from kokpit.controllers.probe import metrics
from kokpit.controllers.probe.options import PROBE_LABEL, ProbeOptions
from kokpit.controllers.probe.pod import Object, pod_phase, probe_pod, probed
from kokpit.runtime import (
    ApiError,
    Client,
    ClusterAccessor,
    ClusterNotReady,
    ClusterUnreachable,
)
from kokpit.runtime.log import get_logger
from kokpit.runtime.resources import PODS
from kokpit.runtime.store import Store, object_key

#: Why a probe failed, each a ``reason`` label value.
REASONS = {
    "Unreachable": "the cluster's API server does not answer (its health checks fail, or a "
    "request could not be sent)",
    "NotConnected": "kokpit has no usable connection to the cluster (its kubeconfig Secret is "
    "missing, untrusted or unusable)",
    "Rejected": "the API server refused the pod (admission, quota, RBAC, a missing namespace)",
    "Timeout": "the pod was not Running within the timeout",
    "PodFailed": "the pod ended (Failed or Succeeded) before it was seen Running",
    "PodDeleted": "the pod was deleted before it was seen Running",
    "Error": "anything else (an API error while watching; a bug), logged",
}
#: How long a probe pod's delete may take before it is left to the sweep.
DELETE_TIMEOUT = 10.0


class Clusters(Protocol):
    """The Clusters to probe: the manager's Cluster informer."""

    store: Store
    synced: asyncio.Event


class Connections(Protocol):
    """How a business cluster is reached: the process's
    :class:`~kokpit.runtime.ClusterCache`."""

    async def get(self, cluster_key: str) -> ClusterAccessor: ...


@dataclass(frozen=True)
class Outcome:
    """One probe's result: ``reason`` is ``Running`` for a success, else one of
    :data:`REASONS`; ``seconds`` from the create to Running (successes only)."""

    reason: str
    message: str = ""
    seconds: float | None = None

    @property
    def success(self) -> bool:
        return self.reason == "Running"


class PodProbe:
    """The runnable: probes every probed Cluster once per period while this replica leads."""

    needs_leader = True

    def __init__(self, clusters: Clusters, cache: Connections, options: ProbeOptions) -> None:
        self._clusters = clusters
        self._cache = cache
        self.options = options
        self._slots = asyncio.Semaphore(options.concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        #: Clusters swept of leftover pods since this start.
        self._swept: set[str] = set()
        #: The label sets each cluster has counted, so a gone Cluster's series can go too.
        self._series: dict[str, set[tuple[str, str, str, str]]] = {}
        self._log = get_logger("kokpit.probe")

    async def start(self) -> None:
        """Probe every period until cancelled; then cancel the probes under way."""
        await self._clusters.synced.wait()
        try:
            while True:
                began = time.monotonic()
                self.round()
                await asyncio.sleep(max(0.0, self.options.period - (time.monotonic() - began)))
        finally:
            tasks = list(self._running.values())
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def round(self) -> None:
        """Start a probe of each probed Cluster not being probed now; forget gone ones."""
        wanted = {object_key(c): c for c in self._clusters.store.list() if probed(c)}
        for key in wanted.keys() - self._running.keys():
            task = asyncio.get_running_loop().create_task(self._guarded(key), name=f"probe-{key}")
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        for key in set(self._series) - wanted.keys():
            self._forget(key)

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    async def _guarded(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        async with self._slots:
            try:
                outcome = await self.probe(key)
            except Exception as e:  # a bug, or input nobody foresaw: counted, never fatal
                self._log.exception("probe failed unexpectedly", extra={"cluster": key})
                outcome = Outcome("Error", type(e).__name__)
        result = "success" if outcome.success else "failure"
        self._initialise(key)
        metrics.CREATIONS.labels(namespace, name, result, outcome.reason).inc()
        self._series[key].add((namespace, name, result, outcome.reason))
        if outcome.seconds is not None:
            metrics.DURATION.labels(namespace, name).observe(outcome.seconds)
        if outcome.success:
            self._log.debug("probe succeeded", extra={"cluster": key, "s": outcome.seconds})
        else:
            self._log.info(
                "probe failed",
                extra={"cluster": key, "reason": outcome.reason, "detail": outcome.message},
            )

    async def probe(self, key: str) -> Outcome:
        """One probe of Cluster ``key`` (``namespace/name``)."""
        try:
            accessor = await self._cache.get(key)
        except ClusterUnreachable as e:
            return Outcome("Unreachable", str(e))
        except ClusterNotReady as e:
            return Outcome("NotConnected", str(e))
        client = accessor.client
        if key not in self._swept and await self._sweep(client):
            self._swept.add(key)
        return await self._create_and_watch(client)

    async def _create_and_watch(self, client: Client) -> Outcome:
        created: Object | None = None
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.options.timeout):
                try:
                    created = await client.create(PODS, probe_pod(self.options))
                except ApiError as e:
                    return Outcome("Rejected", _first_line(e))
                phase = await _until_running(client, created)
                if phase != "Running":
                    return Outcome("PodDeleted" if phase == "Deleted" else "PodFailed", phase)
                return Outcome("Running", seconds=time.monotonic() - began)
        except TimeoutError:
            what = "Running" if created is not None else "created"
            return Outcome("Timeout", f"not {what} within {self.options.timeout:g} s")
        except aiohttp.ClientError as e:
            return Outcome("Unreachable", _first_line(e))
        except ApiError as e:
            return Outcome("Error", _first_line(e))
        finally:
            if created is not None:
                await self._delete(client, created)

    async def _delete(self, client: Client, pod: Object) -> None:
        """Delete a probe pod, bounded; a failure is left to the next start's sweep."""
        meta = pod["metadata"]
        try:
            async with asyncio.timeout(DELETE_TIMEOUT):
                await client.delete(
                    PODS, meta["name"], namespace=meta["namespace"], grace_period_seconds=0
                )
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            if not isinstance(e, ApiError) or e.code != 404:
                self._log.warning(
                    "probe pod not deleted", extra={"pod": meta["name"], "e": _first_line(e)}
                )

    async def _sweep(self, client: Client) -> bool:
        """Delete the probe pods a previous process left (it died between create and delete);
        whether they could be listed (if not, the next probe tries again)."""
        try:
            async with asyncio.timeout(DELETE_TIMEOUT):
                pods = await client.list(
                    PODS, namespace=self.options.namespace, label_selector=f"{PROBE_LABEL}=true"
                )
        except (ApiError, aiohttp.ClientError, TimeoutError):
            return False  # the probe itself will tell what is wrong
        for pod in pods.items:
            await self._delete(client, pod)
        return True

    def _initialise(self, key: str) -> None:
        """Every series of a cluster, at zero, from its first probe on: Prometheus'
        ``increase()`` needs a sample before the first count, or it loses that count (the
        first failure of a kind would not move a success ratio)."""
        if key in self._series:
            return
        namespace, name = key.split("/", 1)
        series = {(namespace, name, "success", "Running")}
        series |= {(namespace, name, "failure", reason) for reason in REASONS}
        for labels in series:
            metrics.CREATIONS.labels(*labels)
        metrics.DURATION.labels(namespace, name)
        self._series[key] = series

    def _forget(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        for labels in self._series.pop(key, set()):
            with contextlib.suppress(KeyError):
                metrics.CREATIONS.remove(*labels)
        with contextlib.suppress(KeyError):
            metrics.DURATION.remove(namespace, name)
        self._swept.discard(key)


async def _until_running(client: Client, pod: Object) -> str:
    """Watch ``pod`` from its created version until it is Running, has ended (its phase),
    or is gone (``Deleted``); a watch the server ends is resumed (the caller bounds it)."""
    meta = pod["metadata"]
    phase, version = pod_phase(pod), meta["resourceVersion"]
    while phase not in ("Running", "Succeeded", "Failed"):
        async for event in client.watch(
            PODS,
            namespace=meta["namespace"],
            field_selector=f"metadata.name={meta['name']}",
            resource_version=version,
            timeout_seconds=60,
        ):
            if event.type == "BOOKMARK":
                version = event.object["metadata"]["resourceVersion"]
                continue
            if event.type == "DELETED":
                return "Deleted"
            version = event.object["metadata"]["resourceVersion"]
            phase = pod_phase(event.object)
            if phase in ("Running", "Succeeded", "Failed"):
                break
    return phase


def _first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
