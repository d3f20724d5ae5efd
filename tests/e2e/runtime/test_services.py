"""Service names looked up through the API server (kokpit.runtime.services), for operators
outside the meta-cluster: the real API server's Services, and a real TLS connection made to
the looked-up address while the certificate is verified for the name in the URL."""

from __future__ import annotations

import ssl
from dataclasses import replace

import aiohttp
import pytest

from kokpit.local import LocalCluster
from kokpit.runtime import Client, ClientConfig
from kokpit.runtime.client import NO_RETRY
from kokpit.runtime.resources import SERVICES
from kokpit.runtime.services import ServiceAddresses, service_of


def service(namespace: str, name: str, *, headless: bool = False) -> dict[str, object]:
    spec: dict[str, object] = {"ports": [{"port": 6443}], "selector": {"app": name}}
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def test_only_service_names_are_looked_up() -> None:
    assert service_of("a-kube-apiserver.team-a.svc") == ("team-a", "a-kube-apiserver")
    assert service_of("a.team-a.svc.cluster.local") == ("team-a", "a")
    assert service_of("A.Team-A.SVC") == ("team-a", "a")
    for other in ("example.com", "a.b.svc.example.com", "svc", "a.svc", "-a.b.svc", "a.b.c.svc"):
        assert service_of(other) is None, other


async def test_cluster_ip_of_a_service_and_none_otherwise(client: Client, namespace: str) -> None:
    created = await client.create(SERVICES, service(namespace, "api"))
    await client.create(SERVICES, service(namespace, "peers", headless=True))
    addresses = ServiceAddresses(client)

    ip = created["spec"]["clusterIP"]
    assert await addresses(f"api.{namespace}.svc") == ip
    assert await addresses(f"api.{namespace}.svc.cluster.local") == ip
    assert await addresses(f"peers.{namespace}.svc") is None  # headless: no address of its own
    assert await addresses(f"missing.{namespace}.svc") is None  # DNS may know it
    assert await addresses("localhost") is None


async def test_connects_to_the_address_and_verifies_the_name(local_cluster: LocalCluster) -> None:
    """The meta-cluster's own API server, reached at 127.0.0.1 under a Service name: its
    certificate names kubernetes.default.svc, so that name connects and another does not."""
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    port = admin.server.rsplit(":", 1)[1]

    async def loopback(host: str) -> str | None:
        return "127.0.0.1" if service_of(host) else None

    named = replace(admin, server=f"https://kubernetes.default.svc:{port}", resolve=loopback)
    async with Client(named, retry=NO_RETRY) as through:
        assert (await through.request("GET", "/version"))["gitVersion"]

    other = replace(named, server=f"https://other.default.svc:{port}")
    async with Client(other, retry=NO_RETRY) as wrong:
        with pytest.raises((aiohttp.ClientConnectorCertificateError, ssl.SSLError)):
            await wrong.request("GET", "/version")
