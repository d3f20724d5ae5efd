"""A cache per business cluster: for each Cluster of the meta-cluster, a client and shared
informers built from the kubeconfig Secret issued for it (Cluster API's ClusterCache, on
asyncio).

Why: an operator that acts in business clusters must also *see* them (a taint removed by hand,
a node gone) without polling each cluster, and must follow their credentials when they rotate.

- **On demand.** A cluster is connected the first time :meth:`ClusterCache.get` asks for it,
  or at once for every Cluster when a :meth:`ClusterCache.watch` is registered.
- **Trust.** The Secret named by ``options.secret_name(cluster)`` is used only if its
  controller ownerReference is this Cluster (kind and uid) and its type is
  ``options.secret_type``: nothing a Machine or a user names. A refusal is reported in
  :class:`ClusterNotReady`'s message, which never quotes the Secret's content.
- **Rotation.** A metadata-only, label-selected informer on the Secrets (label
  ``options.cluster_label``), one per namespace that holds a connected Cluster (so the operator
  needs list and watch on Secrets only where its Clusters are), notices a new resourceVersion of
  a Secret in use; the cluster's
  client and informers are then rebuilt. One watch costs less than polling thousands of Secrets;
  ``watch_secrets=False`` trades it for a metadata GET of each Secret per health check (for an
  operator that may not list Secrets). A rebuilt informer adopts its predecessor's store, so its
  first list on the new connection emits only what changed (and the deletes missed between).
- **Health.** Each connected cluster is probed (``health_path``, one attempt, a timeout) every
  ``health_interval``; after ``failure_threshold`` failures in a row its informers are stopped,
  its client closed, and :meth:`get` raises :class:`ClusterUnreachable` with the reason until a
  reconnect succeeds. Reconnects back off exponentially: never a tight loop.
- **Teardown.** A deleted Cluster (or one recreated under the same name: another uid) loses
  its informers and its client.
- **Events.** :meth:`ClusterCache.watch` is an event source for
  :meth:`~kokpit.runtime.controller.Controller.watch`: events from every business cluster's
  informer are mapped (with the cluster's key) to meta-cluster requests.

The cache is a runnable that needs the leader: only the replica that acts holds connections.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ssl
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import aiohttp

from kokpit.runtime import errors
from kokpit.runtime.client import Client, Object
from kokpit.runtime.config import ClientConfig, ConfigError, Resolve
from kokpit.runtime.controller import Predicate, Request
from kokpit.runtime.informer import (
    EventHandler,
    Informer,
    Origin,
    Scope,
    Transform,
    dispatching,
    strip_unneeded,
)
from kokpit.runtime.log import get_logger
from kokpit.runtime.ratelimit import ExponentialBackoff
from kokpit.runtime.resources import SECRETS, Resource
from kokpit.runtime.store import Store, object_key

#: Maps an object of the business cluster ``cluster_key`` to the meta-cluster objects to
#: reconcile.
ClusterMapper = Callable[[str, Object], Iterable[Request]]


class ClusterNotReady(Exception):
    """The business cluster cannot be used (yet); the message is for a person."""


class ClusterUnreachable(ClusterNotReady):
    """The business cluster's API server does not answer its health check."""


@dataclass(frozen=True)
class ClusterCacheOptions:
    #: The name of the Secret (in the Cluster's namespace) that holds the Cluster's kubeconfig,
    #: or None while there is none: the caller decides which credentials it acts with.
    secret_name: Callable[[Object], str | None]
    #: The only Secret type accepted (the Cluster-Operator issues this type).
    secret_type: str = "kokpit.io/kubeconfig"
    #: The Secret's key that holds the kubeconfig.
    secret_key: str = "value"
    #: The label that marks a Cluster's Secrets (value: the Cluster's name); watched for rotation.
    cluster_label: str = "kokpit.io/cluster"
    #: Notice rotation by watching those Secrets (needs list/watch on Secrets); False re-reads
    #: each Secret's metadata at every health check instead.
    watch_secrets: bool = True
    #: How to find a business API server's address before DNS (see
    #: :mod:`kokpit.runtime.services`); None: DNS only.
    resolve: Resolve | None = None
    #: Rate limit of each business cluster's client.
    qps: float = 50.0
    burst: int = 100
    #: A cheap, unauthenticated-readable path: 200 when the API server serves.
    health_path: str = "/readyz"
    health_interval: float = 10.0
    health_timeout: float = 5.0
    #: Failed health checks in a row before a connected cluster is torn down.
    failure_threshold: int = 3
    #: Reconnect backoff (per cluster, doubling from min to max).
    min_backoff: float = 1.0
    max_backoff: float = 300.0
    #: How long :meth:`ClusterCache.get` waits for a connection in progress.
    connect_timeout: float = 30.0
    #: The transform of informers that ask for none (see :func:`strip_unneeded`).
    transform: Transform = strip_unneeded


def untrusted(cluster: Object, secret: Object, secret_type: str) -> str | None:
    """Why ``secret`` may not be used as ``cluster``'s kubeconfig, or None if it may.

    Only a Secret its Cluster controls (the Cluster-Operator issued it, for this very Cluster)
    and of the kubeconfig type is trusted; the reason never quotes the Secret's data.
    """
    kind = cluster.get("kind") or "Cluster"
    uid = cluster["metadata"]["uid"]
    refs = (secret.get("metadata") or {}).get("ownerReferences") or []
    owner = next((r for r in refs if r.get("controller")), None)
    if owner is None:
        return f"it has no controller owner (it must be issued for this {kind})"
    if owner.get("kind") != kind or owner.get("uid") != uid:
        return f"its controller is {owner.get('kind')} {owner.get('name')}, not this {kind}"
    if secret.get("type") != secret_type:
        return f"its type is {secret.get('type') or 'Opaque'}, not {secret_type}"
    return None


class ClusterAccessor:
    """One business cluster's client and its shared informers, on one connection."""

    def __init__(
        self, key: str, client: Client, transform: Transform, stores: dict[Hashable, Store]
    ) -> None:
        self.key = key
        self.client = client
        self.closed = False
        self._transform = transform
        self._informers: dict[tuple[Scope, Transform], Informer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: The stores of the previous connection's informers, adopted by their successors.
        self._stores = stores

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        transform: Transform | None = None,
    ) -> Informer:
        """The shared (per scope and transform) informer of the business cluster, started on
        first use."""
        if self.closed:
            raise ClusterNotReady(f"the connection to Cluster {self.key} was closed")
        scope = Scope(resource, namespace, label_selector, field_selector, metadata_only)
        ident = (scope, transform or self._transform)
        informer = self._informers.get(ident)
        if informer is None:
            store = self._stores.pop(ident, None) or Store()
            informer = Informer(self.client, scope, transform=ident[1], store=store)
            self._informers[ident] = informer
            task = asyncio.get_running_loop().create_task(
                informer.start(), name=f"clustercache-{self.key}-{resource}"
            )
            task.add_done_callback(_log_crash)
            self._tasks.append(task)
        return informer

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    @property
    def running_informers(self) -> int:
        """How many informers still run (0 once closed)."""
        return sum(1 for t in self._tasks if not t.done())

    async def close(self) -> dict[Hashable, Store]:
        """Stop the informers and close the client; returns their stores (for a successor)."""
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.close()
        return {ident: i.store for ident, i in self._informers.items()}


@dataclass
class _Identity:
    """What a connection was built from; another value means another connection."""

    uid: str
    secret: str  # namespace/name
    secret_rv: str


@dataclass
class _State:
    """One cluster: its connection (or why there is none) and the task that keeps it."""

    key: str
    task: asyncio.Task[None] | None = None
    accessor: ClusterAccessor | None = None
    identity: _Identity | None = None
    #: The Secret (namespace/name) the last attempt used, once known, and the resourceVersion
    #: it read (None before); ``reading`` while that GET is under way.
    secret: str | None = None
    secret_rv: str | None = None
    reading: bool = False
    error: ClusterNotReady | None = None
    #: Set while no connection attempt is under way.
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set to make the task rebuild (or retry) now.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Connection attempts (health probes of a new connection) so far.
    attempts: int = 0

    def rebuild(self) -> None:
        self.settled.clear()
        self.wake.set()


class ClusterCache:
    """Clients and informers of the business clusters that ``clusters`` lists."""

    needs_leader = True

    def __init__(self, client: Client, clusters: Informer, options: ClusterCacheOptions) -> None:
        self._meta = client
        self._clusters = clusters
        self.options = options
        self._states: dict[str, _State] = {}
        self._watches: list[ClusterWatch] = []
        #: The Secret informers, one per namespace holding a Cluster (with watch_secrets).
        self._secrets: dict[str, tuple[Informer, asyncio.Task[None]]] = {}
        self._running = False
        self._log = get_logger("kokpit.clustercache")
        clusters.add_handler(_ClusterEvents(self))

    # -- the API ------------------------------------------------------------------------

    async def get(self, cluster_key: str) -> ClusterAccessor:
        """The connected cluster ``namespace/name``; raises :class:`ClusterNotReady` (or
        :class:`ClusterUnreachable`) with a message for a person."""
        if not self._running:
            raise ClusterNotReady("the cluster cache is not running (not the leader?)")
        if self._clusters.store.get(cluster_key) is None:
            raise ClusterNotReady(f"Cluster {cluster_key} does not exist")
        state = self._want(cluster_key)
        for _ in range(3):
            try:
                await asyncio.wait_for(state.settled.wait(), self.options.connect_timeout)
            except TimeoutError:
                raise ClusterNotReady(f"Cluster {cluster_key}: still connecting") from None
            if state.accessor is not None and not state.accessor.closed:
                if self._current(state):
                    return state.accessor
                state.rebuild()  # the Cluster changed and the task has not seen it yet
                continue
            if state.error is not None:
                raise state.error
        raise ClusterNotReady(f"Cluster {cluster_key}: its connection keeps changing")

    def watch(
        self,
        resource: Resource,
        mapper: ClusterMapper,
        *,
        predicate: Predicate | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        metadata_only: bool = False,
        transform: Transform | None = None,
    ) -> ClusterWatch:
        """An event source for ``Controller.watch``: ``resource`` in every business cluster
        (current and future ones, which this connects), mapped to meta-cluster requests."""
        spec = _InformerSpec(
            resource, namespace, label_selector, field_selector, metadata_only, transform
        )
        watch = ClusterWatch(self, spec, mapper, predicate)
        self._watches.append(watch)
        for state in self._states.values():
            if state.accessor is not None and not state.accessor.closed:
                watch.attach(state.key, state.accessor)
        if self._running:
            for cluster in self._clusters.store.list():
                self._want(object_key(cluster))
        return watch

    def connected(self) -> list[str]:
        """The keys of the clusters connected now."""
        return sorted(
            k for k, s in self._states.items() if s.accessor is not None and not s.accessor.closed
        )

    def attempts(self, cluster_key: str) -> int:
        """Connection attempts to this cluster so far (0 if unknown)."""
        state = self._states.get(cluster_key)
        return state.attempts if state is not None else 0

    async def start(self) -> None:
        """Keep the wanted clusters connected until cancelled; then disconnect them all."""
        self._running = True
        try:
            await self._clusters.synced.wait()
            if self._watches:
                for cluster in self._clusters.store.list():
                    self._want(object_key(cluster))
            await asyncio.Event().wait()
        finally:
            self._running = False
            secret_watches, self._secrets = list(self._secrets.values()), {}
            for _, task in secret_watches:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.close()

    async def close(self) -> None:
        """Disconnect every cluster (idempotent)."""
        states, self._states = list(self._states.values()), {}
        for state in states:
            await self._stop(state)

    # -- keeping one cluster connected ---------------------------------------------------

    def _watch_secrets_in(self, namespace: str) -> None:
        """Start the Secret watch of ``namespace`` (once)."""
        if not self.options.watch_secrets or namespace in self._secrets:
            return
        informer = Informer(
            self._meta,
            Scope(
                SECRETS,
                namespace=namespace,
                label_selector=self.options.cluster_label,
                metadata_only=True,
            ),
        )
        informer.add_handler(_SecretEvents(self))
        task = asyncio.get_running_loop().create_task(
            informer.start(), name=f"clustercache-secrets-{namespace}"
        )
        task.add_done_callback(_log_crash)
        self._secrets[namespace] = (informer, task)

    def _want(self, key: str) -> _State:
        state = self._states.get(key)
        if state is None:
            self._watch_secrets_in(key.split("/", 1)[0])
            state = self._states[key] = _State(key)
            state.task = asyncio.get_running_loop().create_task(
                self._keep(state), name=f"clustercache-{key}"
            )
            state.task.add_done_callback(_log_crash)
        return state

    def _drop(self, key: str) -> None:
        state = self._states.pop(key, None)
        if state is not None and state.task is not None:
            self._log.info("Cluster gone; disconnecting", extra={"cluster": key})
            state.task.cancel()  # its finally closes the connection

    async def _stop(self, state: _State) -> None:
        if state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.task

    async def _keep(self, state: _State) -> None:
        """Connect, watch the health, rebuild on a change, back off on failures."""
        backoff = ExponentialBackoff(self.options.min_backoff, self.options.max_backoff)
        stores: dict[Hashable, Store] = {}
        log = self._log.with_fields(cluster=state.key)
        try:
            while True:
                state.wake.clear()
                state.settled.clear()
                try:
                    state.accessor, state.identity = await self._connect(state, stores)
                except Exception as e:
                    if not isinstance(e, ClusterNotReady):  # a bug, or input nobody foresaw
                        log.exception("connecting failed unexpectedly")
                        e = ClusterNotReady(f"Cluster {state.key}: {type(e).__name__}")
                    state.error = e
                    state.settled.set()
                    delay = backoff.when(state.key)
                    log.warning(
                        "cluster not ready", extra={"reason": str(e), "retry_s": round(delay, 2)}
                    )
                    await _wait(state.wake, delay)
                    continue
                backoff.forget(state.key)
                state.error = None
                state.settled.set()
                log.info("connected", extra={"server": state.accessor.client.config.server})
                failure = await self._monitor(state, state.accessor.client)
                state.settled.clear()
                stores = await state.accessor.close()
                self._detach(state.key)
                if failure is not None:
                    state.error = failure
                    state.settled.set()
                    delay = backoff.when(state.key)
                    log.warning(
                        "cluster unreachable; disconnected",
                        extra={"reason": str(failure), "retry_s": round(delay, 2)},
                    )
                    await _wait(state.wake, delay)
                else:
                    log.info("kubeconfig or Cluster changed; reconnecting")
        finally:
            self._detach(state.key)
            if state.accessor is not None:
                await state.accessor.close()
            state.error = ClusterNotReady(f"Cluster {state.key} is no longer cached")
            state.settled.set()

    async def _connect(
        self, state: _State, stores: dict[Hashable, Store]
    ) -> tuple[ClusterAccessor, _Identity]:
        """Read and check the Secret, probe the API server, start the watches' informers."""
        cluster = self._clusters.store.get(state.key)
        if cluster is None:
            raise ClusterNotReady(f"Cluster {state.key} does not exist")
        namespace, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        secret_name = self.options.secret_name(cluster)
        if not secret_name:
            state.secret = None
            raise ClusterNotReady(f"Cluster {name} has no kubeconfig Secret yet")
        state.secret = f"{namespace}/{secret_name}"
        what = f"Cluster {name}'s kubeconfig Secret {secret_name}"
        state.reading, state.secret_rv = True, None
        try:
            secret = await self._meta.get(SECRETS, secret_name, namespace=namespace)
        except errors.NotFound:
            raise ClusterNotReady(f"{what} does not exist") from None
        except (errors.ApiError, aiohttp.ClientError, TimeoutError) as e:
            raise ClusterNotReady(f"{what} cannot be read: {_reason(e)}") from e
        finally:
            state.reading = False
        state.secret_rv = secret["metadata"]["resourceVersion"]
        # A change the watch delivered while the GET was under way: build again after this.
        secrets = self._secrets.get(namespace)
        seen = secrets[0].store.get(state.secret) if secrets is not None else None
        if seen is not None and seen["metadata"]["resourceVersion"] != state.secret_rv:
            state.wake.set()
        if problem := untrusted(cluster, secret, self.options.secret_type):
            raise ClusterNotReady(f"{what} is not trusted: {problem}")
        config = self._config(secret, what)
        client = Client(config)
        state.attempts += 1
        try:
            await client.probe(self.options.health_path, seconds=self.options.health_timeout)
        except BaseException as e:
            await client.close()
            if not isinstance(e, Exception):  # cancelled: closed, and gone
                raise
            message = f"Cluster {name}'s API server {config.server} does not answer: {_reason(e)}"
            raise ClusterUnreachable(message) from e
        accessor = ClusterAccessor(state.key, client, self.options.transform, stores)
        for watch in self._watches:
            watch.attach(state.key, accessor)
        identity = _Identity(
            cluster["metadata"]["uid"], state.secret, secret["metadata"]["resourceVersion"]
        )
        return accessor, identity

    def _config(self, secret: Object, what: str) -> ClientConfig:
        """The client configuration in the Secret; messages name the problem, never the data."""
        value = (secret.get("data") or {}).get(self.options.secret_key)
        if not value:
            raise ClusterNotReady(f"{what} has no {self.options.secret_key!r} key")
        try:
            text = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise ClusterNotReady(f"{what}: {self.options.secret_key!r} is not base64") from None
        try:
            config = ClientConfig.from_kubeconfig_data(
                text,
                source=f"in {what}",
                qps=self.options.qps,
                burst=self.options.burst,
                resolve=self.options.resolve,
            )
            config.ssl_context()  # a certificate or key that cannot load fails here, not later
        except ConfigError as e:
            # The first line only: a YAML error's later lines quote the offending text.
            raise ClusterNotReady(str(e).splitlines()[0][:300]) from None
        except (KeyError, TypeError, ValueError, ssl.SSLError) as e:
            raise ClusterNotReady(f"{what} is not a usable kubeconfig ({type(e).__name__})") from e
        return config

    async def _monitor(self, state: _State, client: Client) -> ClusterUnreachable | None:
        """Until a change (None: rebuild now) or ``failure_threshold`` failed probes in a row
        (the reason)."""
        failures, o = 0, self.options
        while True:
            if await _wait(state.wake, o.health_interval):
                return None
            if not o.watch_secrets and await self._secret_changed(state):
                return None
            try:
                await client.probe(o.health_path, seconds=o.health_timeout)
                failures = 0
            except Exception as e:  # any failure to answer counts, none ends the watch
                failures += 1
                self._log.warning(
                    "health check failed",
                    extra={"cluster": state.key, "failures": failures, "error": _reason(e)},
                )
                if failures >= o.failure_threshold:
                    message = (
                        f"Cluster {state.key}'s API server {client.config.server} failed "
                        f"{failures} health checks in a row: {_reason(e)}"
                    )
                    return ClusterUnreachable(message)

    async def _secret_changed(self, state: _State) -> bool:
        if state.identity is None:
            return False
        namespace, name = state.identity.secret.split("/", 1)
        try:
            meta = await self._meta.get(SECRETS, name, namespace=namespace, metadata_only=True)
        except errors.NotFound:
            return True
        except (errors.ApiError, aiohttp.ClientError, TimeoutError):
            return False  # cannot tell; the next check will
        return bool(meta["metadata"]["resourceVersion"] != state.identity.secret_rv)

    def _detach(self, key: str) -> None:
        for watch in self._watches:
            watch.detach(key)

    def _current(self, state: _State) -> bool:
        """Whether the connection was built for the Cluster as it is now (a changed Secret
        is noticed by its event, which makes the task rebuild)."""
        cluster = self._clusters.store.get(state.key)
        if state.identity is None or cluster is None:
            return False
        return self._reach(cluster) == (state.identity.uid, state.identity.secret)

    def _reach(self, cluster: Object) -> tuple[str, str]:
        """What a connection is built from, on the Cluster's side."""
        meta = cluster["metadata"]
        return meta["uid"], f"{meta['namespace']}/{self.options.secret_name(cluster)}"

    def clusters_synced(self) -> asyncio.Event:
        return self._clusters.synced

    # -- events from the meta-cluster ----------------------------------------------------

    def _cluster_changed(self, old: Object | None, new: Object) -> None:
        key = object_key(new)
        state = self._states.get(key)
        if state is None:
            if self._running and self._watches:
                self._want(key)
        elif old is None or self._reach(old) != self._reach(new):
            state.rebuild()  # mid-attempt, the task tries again at once afterwards

    def _secret_event(self, secret: Object) -> None:
        meta = secret["metadata"]
        cluster = (meta.get("labels") or {}).get(self.options.cluster_label)
        state = self._states.get(f"{meta.get('namespace')}/{cluster}")
        if state is None or state.secret != object_key(secret) or state.reading:
            return  # not in use, or being read now (and compared when read)
        if state.secret_rv != meta.get("resourceVersion"):
            state.rebuild()


@dataclass(frozen=True)
class _InformerSpec:
    resource: Resource
    namespace: str | None
    label_selector: str | None
    field_selector: str | None
    metadata_only: bool
    transform: Transform | None


class ClusterWatch:
    """An event source (see :class:`~kokpit.runtime.controller.EventSource`) over one resource
    in every business cluster.

    It delivers, for each business object event that passes the predicate, the same event
    (add, update or delete) of a *reference* (``{"metadata": {"namespace", "name"}}``) to each
    meta-cluster object the mapper names, so a controller watches it with the default
    ``for_object`` mapper.
    """

    def __init__(
        self,
        cache: ClusterCache,
        spec: _InformerSpec,
        mapper: ClusterMapper,
        predicate: Predicate | None,
    ) -> None:
        self._cache = cache
        self._spec = spec
        self._mapper = mapper
        self._predicate = predicate
        self._handlers: list[EventHandler] = []
        self._informers: dict[str, Informer] = {}

    def add_handler(self, handler: EventHandler) -> None:
        """Register ``handler``; it first gets what the synced clusters hold (as an
        informer's new handler does)."""
        self._handlers.append(handler)
        with dispatching(Origin.LISTED):
            for key, informer in self._informers.items():
                if informer.synced.is_set():
                    for obj in informer.store.list():
                        self.deliver(key, obj, None, "add", [handler])

    async def wait_synced(self) -> None:
        """Synced when the Clusters are: a controller does not wait for business clusters
        (one unreachable cluster must not stop the others' reconciles)."""
        await self._cache.clusters_synced().wait()

    def attach(self, cluster_key: str, accessor: ClusterAccessor) -> None:
        s = self._spec
        informer = accessor.informer(
            s.resource,
            namespace=s.namespace,
            label_selector=s.label_selector,
            field_selector=s.field_selector,
            metadata_only=s.metadata_only,
            transform=s.transform,
        )
        informer.add_handler(_Mapped(self, cluster_key))
        self._informers[cluster_key] = informer

    def detach(self, cluster_key: str) -> None:
        """Forget the cluster's informer (closed: nothing to replay from it)."""
        self._informers.pop(cluster_key, None)

    def deliver(
        self,
        cluster_key: str,
        obj: Object,
        old: Object | None,
        event: str,
        handlers: list[EventHandler] | None = None,
    ) -> None:
        if event != "delete" and self._predicate is not None and not self._predicate(old, obj):
            return
        for request in self._mapper(cluster_key, obj):
            ref: Object = {"metadata": {"namespace": request.namespace, "name": request.name}}
            for handler in self._handlers if handlers is None else handlers:
                # The same kind of event, of the reference: a queue tells a change from an add.
                if event == "update":
                    handler.on_update(ref, ref)
                elif event == "delete":
                    handler.on_delete(ref)
                else:
                    handler.on_add(ref)


class _Mapped:
    """The handler on one business cluster's informer."""

    def __init__(self, watch: ClusterWatch, cluster_key: str) -> None:
        self._watch = watch
        self._key = cluster_key

    def on_add(self, obj: Object) -> None:
        self._watch.deliver(self._key, obj, None, "add")

    def on_update(self, old: Object, new: Object) -> None:
        self._watch.deliver(self._key, new, old, "update")

    def on_delete(self, obj: Object) -> None:
        self._watch.deliver(self._key, obj, None, "delete")


class _ClusterEvents:
    def __init__(self, cache: ClusterCache) -> None:
        self._cache = cache

    def on_add(self, obj: Object) -> None:
        self._cache._cluster_changed(None, obj)

    def on_update(self, old: Object, new: Object) -> None:
        self._cache._cluster_changed(old, new)

    def on_delete(self, obj: Object) -> None:
        self._cache._drop(object_key(obj))


class _SecretEvents:
    def __init__(self, cache: ClusterCache) -> None:
        self._cache = cache

    def on_add(self, obj: Object) -> None:
        self._cache._secret_event(obj)

    def on_update(self, old: Object, new: Object) -> None:
        self._cache._secret_event(new)

    def on_delete(self, obj: Object) -> None:
        self._cache._secret_event(obj)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` at most ``seconds``; whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        get_logger("kokpit.clustercache").error(
            "task stopped", exc_info=task.exception(), extra={"task": task.get_name()}
        )
