"""An asyncio client for the Kubernetes API: any resource, plain dicts, fast JSON.

Objects are plain ``dict`` decoded with orjson (several times faster than the generated models
of the official Python clients), addressed by a :class:`~kokpit.runtime.resources.Resource`.

Every request passes one client-side token bucket (``qps``/``burst``), is counted in
``rest_client_requests_total``, and is retried with backoff when that is safe:

- 429 Too Many Requests, for any verb (the server did nothing), after ``Retry-After``;
- 5xx and broken connections, for verbs that may be repeated (GET, PUT, DELETE, and
  server-side apply; PUT is guarded by ``resourceVersion``), with exponential backoff;
- a connection that was never made, for any verb.

Anything else raises a typed :mod:`~kokpit.runtime.errors` error carrying the API server's
message. Pure request-building and response-parsing helpers are separate from the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from kokpit.runtime import errors, metrics
from kokpit.runtime.config import ClientConfig
from kokpit.runtime.ratelimit import TokenBucket
from kokpit.runtime.resources import Resource
from kokpit.runtime.services import Resolver

Object = dict[str, Any]

#: Ask for PartialObjectMetadata instead of whole objects.
METADATA_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
METADATA_LIST_ACCEPT = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)


class PatchType(enum.StrEnum):
    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


@dataclass(frozen=True)
class ObjectList:
    """The items of a (fully paginated) list and the resourceVersion to watch from."""

    items: list[Object]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Object


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failed request."""

    max_attempts: int = 8
    base_delay: float = 0.1
    max_delay: float = 5.0
    #: Used for a 429 without a Retry-After header.
    default_retry_after: float = 1.0

    def delay(
        self, method: str, error: BaseException, attempt: int, *, apply: bool
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt + 1 >= self.max_attempts:
            return None
        backoff = min(self.max_delay, self.base_delay * 2.0**attempt)
        if isinstance(error, errors.TooManyRequests):
            return error.retry_after if error.retry_after is not None else self.default_retry_after
        if isinstance(error, aiohttp.ClientConnectorError):
            return backoff  # never connected: nothing was done
        repeatable = method in ("GET", "PUT", "DELETE") or apply
        if repeatable and isinstance(
            error, errors.ServerError | aiohttp.ClientError | TimeoutError
        ):
            return backoff
        return None


NO_RETRY = RetryPolicy(max_attempts=1)
#: How many of its own writes' resourceVersions a client remembers: the echo of a write comes
#: back within seconds, and a thousand Machines joining write about ten thousand times.
WRITES_REMEMBERED = 16_384
CLOSE_GRACE_S = 0.1


@dataclass
class Client:
    """Talks to one API server. Use as ``async with Client(config) as client``."""

    config: ClientConfig
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Total time allowed for one non-watch request.
    timeout: float = 60.0
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _bucket: TokenBucket = field(init=False, repr=False)
    _host: str = field(init=False, repr=False)
    _written: RecentVersions = field(init=False, repr=False)
    _in_flight: dict[str, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.config.qps, self.config.burst)
        self._host = urlsplit(self.config.server).netloc
        self._written = RecentVersions(WRITES_REMEMBERED)

    def wrote(self, res: Resource, obj: Object) -> bool:
        """Whether ``obj`` (as a watch event brings it) is the echo of this client's own write:
        one of its recent writes made its resourceVersion, or a write of it is still in flight
        (the event can arrive before the response that tells the version). Informers give
        such events a low priority: a reconcile need not hurry to see what it did itself. A
        change someone else makes while our write of the same object is in flight is taken
        for ours too; it is still reconciled, only not ahead of the rest."""
        meta = obj.get("metadata") or {}
        if meta.get("resourceVersion") in self._written:
            return True
        name = meta.get("name")
        return bool(name) and res.path(meta.get("namespace"), name) in self._in_flight

    @contextlib.contextmanager
    def _writing(self, res: Resource, namespace: str | None, name: str | None) -> Iterator[None]:
        """Mark a write of the object in flight (see :meth:`wrote`)."""
        if not name:  # generateName: nothing to recognise it by before the response
            yield
            return
        path = res.path(namespace, name)
        self._in_flight[path] = self._in_flight.get(path, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight.pop(path) - 1
            if left:
                self._in_flight[path] = left

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            # A TLS transport finishes closing a few loop turns after the session says it is
            # closed (aiohttp's documented caveat); let it, rather than leave it to the garbage
            # collector and its "unclosed transport" warning.
            await asyncio.sleep(CLOSE_GRACE_S)

    # -- reads -------------------------------------------------------------------------

    async def get(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        metadata_only: bool = False,
    ) -> Object:
        accept = METADATA_ACCEPT if metadata_only else "application/json"
        got: Object = await self.request(
            "GET", res.path(namespace, name, subresource), accept=accept
        )
        return got

    async def list(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
        metadata_only: bool = False,
    ) -> ObjectList:
        """Every object, following ``continue`` tokens; items get ``apiVersion``/``kind``."""
        items: list[Object] = []
        token: str | None = None
        accept = METADATA_LIST_ACCEPT if metadata_only else "application/json"
        while True:
            params = _params(
                labelSelector=label_selector,
                fieldSelector=field_selector,
                limit=limit,
                **{"continue": token},
            )
            page = await self.request("GET", res.path(namespace), params=params, accept=accept)
            for item in page.get("items") or []:
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            token = page.get("metadata", {}).get("continue")
            if not token:
                return ObjectList(items, page["metadata"]["resourceVersion"])

    async def watch(
        self,
        res: Resource,
        *,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        metadata_only: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version`` until the server ends the watch.

        Raises :class:`~kokpit.runtime.errors.Gone` when that version has been compacted.
        """
        params = _params(
            watch="true",
            allowWatchBookmarks="true",
            resourceVersion=resource_version,
            timeoutSeconds=timeout_seconds,
            labelSelector=label_selector,
            fieldSelector=field_selector,
        )
        accept = METADATA_ACCEPT if metadata_only else "application/json"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        response = await self._send("GET", res.path(namespace), params, None, None, accept, timeout)
        async with response:
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield parse_watch_line(line)

    async def probe(self, path: str = "/readyz", *, seconds: float = 5.0) -> None:
        """One GET of a health path, never retried (a health check counts its own failures):
        raises unless the server answers 2xx within ``seconds``."""
        response = await self._send(
            "GET",
            path,
            None,
            None,
            None,
            "text/plain",
            aiohttp.ClientTimeout(total=seconds),
            NO_RETRY,
        )
        async with response:
            await response.read()

    # -- writes ------------------------------------------------------------------------

    async def create(self, res: Resource, obj: Object, *, namespace: str | None = None) -> Object:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        with self._writing(res, ns, obj.get("metadata", {}).get("name")):
            created: Object = await self.request("POST", res.path(ns), body=obj)
        return created

    async def evict(self, namespace: str, name: str) -> None:
        """Evict a pod through the Eviction API, which honours PodDisruptionBudgets. A budget
        that forbids it now raises :class:`~kokpit.runtime.errors.TooManyRequests` at once
        (not retried here: the caller decides when to try again)."""
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        await self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
            body=eviction,
            retry=NO_RETRY,
        )

    async def replace(
        self, res: Resource, obj: Object, *, subresource: str | None = None
    ) -> Object:
        """PUT the whole object; its ``metadata.resourceVersion`` makes it a conditional write."""
        meta = obj["metadata"]
        path = res.path(meta.get("namespace"), meta["name"], subresource)
        with self._writing(res, meta.get("namespace"), meta["name"]):
            replaced: Object = await self.request("PUT", path, body=obj)
        return replaced

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> Object:
        params = _params(fieldManager=field_manager, force=_bool(force))
        with self._writing(res, namespace, name):
            patched: Object = await self.request(
                "PATCH",
                res.path(namespace, name, subresource),
                params=params,
                body=patch,
                content_type=patch_type,
            )
        return patched

    async def apply(
        self,
        res: Resource,
        obj: Object,
        *,
        field_manager: str,
        subresource: str | None = None,
        force: bool = True,
    ) -> Object:
        """Server-side apply ``obj`` (which needs apiVersion, kind and metadata.name)."""
        meta = obj["metadata"]
        return await self.patch(
            res,
            meta["name"],
            obj,
            namespace=meta.get("namespace"),
            patch_type=PatchType.APPLY,
            subresource=subresource,
            field_manager=field_manager,
            force=force,
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> Object:
        """Delete; ``uid``/``resource_version`` are preconditions (Conflict if they differ)."""
        options: Object = {"apiVersion": "v1", "kind": "DeleteOptions"}
        preconditions = {
            k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v
        }
        if preconditions:
            options["preconditions"] = preconditions
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        with self._writing(res, namespace, name):
            deleted: Object = await self.request("DELETE", res.path(namespace, name), body=options)
        return deleted

    # -- transport ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        retry: RetryPolicy | None = None,
    ) -> Any:
        """One API call, decoded; errors are typed, retries follow ``retry`` (default: the
        client's :class:`RetryPolicy`)."""
        data = None if body is None else orjson.dumps(body)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        response = await self._send(
            method, path, params, data, content_type, accept, timeout, retry or self.retry
        )
        async with response:
            payload = await response.read()
        decoded = orjson.loads(payload) if payload else None
        if method != "GET" and isinstance(decoded, dict):
            version = (decoded.get("metadata") or {}).get("resourceVersion")
            if isinstance(version, str) and version:
                self._written.add(version)
        return decoded

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        content_type: str | None,
        accept: str,
        client_timeout: aiohttp.ClientTimeout,
        retry: RetryPolicy | None = None,
    ) -> aiohttp.ClientResponse:
        """Send with rate limiting and retries; returns a 2xx response that is still open."""
        session = self._ensure_session()
        headers = {"Accept": accept, "User-Agent": self.config.user_agent}
        if content_type and data is not None:
            headers["Content-Type"] = content_type
        if token := self.config.bearer_token():
            headers["Authorization"] = f"Bearer {token}"
        apply = content_type == PatchType.APPLY
        verb = "WATCH" if params and params.get("watch") else method
        attempt = 0
        while True:
            waited = time.monotonic()
            await self._bucket.wait()
            metrics.REST_RATE_LIMITER_WAIT.labels(verb, self._host).observe(
                time.monotonic() - waited
            )
            started = time.monotonic()
            try:
                response = await session.request(
                    method,
                    self.config.server + path,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=client_timeout,
                )
            except (aiohttp.ClientError, TimeoutError) as e:
                metrics.REST_REQUESTS.labels("<error>", method, self._host).inc()
                failure: BaseException = e
            else:
                metrics.REST_REQUESTS.labels(str(response.status), method, self._host).inc()
                metrics.REST_LATENCY.labels(verb, self._host).observe(time.monotonic() - started)
                if response.status < 300:
                    return response
                async with response:
                    failure = error_from(
                        response.status, await response.read(), response.headers.get("Retry-After")
                    )
            delay = (retry or self.retry).delay(method, failure, attempt, apply=apply)
            if delay is None:
                raise failure
            attempt += 1
            await asyncio.sleep(delay)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = Resolver(self.config.resolve) if self.config.resolve else None
            connector = aiohttp.TCPConnector(
                ssl=self.config.ssl_context(), limit=100, resolver=resolver
            )
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session


class RecentVersions:
    """The last ``size`` resourceVersions added, for membership tests (oldest forgotten)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._order: deque[str] = deque()
        self._members: set[str] = set()

    def __contains__(self, version: object) -> bool:
        return version in self._members

    def add(self, version: str) -> None:
        if version in self._members:
            return
        self._order.append(version)
        self._members.add(version)
        if len(self._order) > self._size:
            self._members.discard(self._order.popleft())


def parse_watch_line(line: bytes) -> WatchEvent:
    """One line of a watch stream; an ERROR event becomes the matching typed error."""
    event = orjson.loads(line)
    if event["type"] == "ERROR":
        status = event.get("object") or {}
        raise errors.from_response(int(status.get("code", 500)), status)
    return WatchEvent(event["type"], event["object"])


def error_from(status: int, payload: bytes, retry_after: str | None) -> errors.ApiError:
    try:
        body = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        body = None
    return errors.from_response(
        status,
        body,
        retry_after=_seconds(retry_after),
        fallback=payload[:200].decode(errors="replace"),
    )


def _seconds(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:
        return None


def _bool(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


def _params(**values: object) -> dict[str, str]:
    return {k: str(v) for k, v in values.items() if v is not None}
