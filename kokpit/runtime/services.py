"""Finding a Service's address through the API server when DNS does not know its name.

A business cluster of the ``kubernetes`` runtime is reached at its Service's name,
``https://<cluster>-kube-apiserver.<namespace>.svc:6443``: inside the meta-cluster the cluster
DNS answers for it. An operator running outside (on a host, as in the local meta-cluster's
demo and tests) has no cluster DNS, but it can reach ClusterIPs wherever kube-proxy runs, and it
can read the Service. :class:`ServiceAddresses` is the missing piece: a client connects to the
Service's ClusterIP while TLS still verifies the certificate for the name in the URL, so
nothing about trust changes; only the lookup does.

Names that are not of the form ``<service>.<namespace>.svc[.cluster.local]``, Services without
a ClusterIP, and lookups the operator may not make fall back to ordinary DNS.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any, Protocol

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from kokpit.runtime.config import Resolve
from kokpit.runtime.errors import ApiError
from kokpit.runtime.resources import SERVICES, Resource


class Reader(Protocol):
    """What :class:`ServiceAddresses` needs of a :class:`~kokpit.runtime.Client`."""

    async def get(self, res: Resource, name: str, *, namespace: str | None = None) -> Any: ...


_SERVICE_NAME = re.compile(
    r"^(?P<service>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"\.svc(\.cluster\.local)?\.?$"
)


def service_of(host: str) -> tuple[str, str] | None:
    """``(namespace, service)`` of a Service DNS name, or None for any other name."""
    match = _SERVICE_NAME.match(host.lower())
    return (match["namespace"], match["service"]) if match else None


class ServiceAddresses:
    """ClusterIPs of Services named by host name, read from the API server (briefly cached:
    a Service's ClusterIP never changes, but a Service may be deleted and made again)."""

    def __init__(self, client: Reader, ttl: float = 30.0) -> None:
        #: The cluster that holds the Services (the meta-cluster).
        self._client = client
        self._ttl = ttl
        self._known: dict[tuple[str, str], tuple[str | None, float]] = {}

    async def __call__(self, host: str) -> str | None:
        key = service_of(host)
        if key is None:
            return None
        known = self._known.get(key)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        namespace, name = key
        try:
            service = await self._client.get(SERVICES, name, namespace=namespace)
            address = (service.get("spec") or {}).get("clusterIP")
        except ApiError:  # missing, or not ours to read: DNS may know better
            address = None
        if address in ("", "None"):
            address = None
        self._known[key] = (address, time.monotonic() + self._ttl)
        return address


class Resolver(AbstractResolver):
    """aiohttp's resolver, asking ``resolve`` first (see the module docstring)."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._dns = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = await self._resolve(host)
        if address is None:
            return await self._dns.resolve(host, port, family)
        ipv6 = ":" in address
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ipv6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        await self._dns.close()
