"""Clients of the business clusters that Machines join, one per cluster, made from the
Cluster's admin kubeconfig Secret and kept while the Cluster's endpoint stays the same."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

from kokpit.runtime import Client, ClientConfig, ConfigError, Forbidden, Informer, NotFound
from kokpit.runtime.resources import SECRETS


def not_permitted(namespace: str) -> str:
    """Why Secrets of ``namespace`` cannot be read: the admin did not bind the operator's
    namespaced role there (config/rbac/machine-operator.yaml)."""
    return (
        f"the Machine-Operator may not read Secrets in namespace {namespace}: bind the "
        f"ClusterRole kokpit-machine-operator-namespaced there with a RoleBinding"
    )


class ClusterNotReady(Exception):
    """The business cluster cannot be reached yet; the message is for a person."""


@dataclass
class _Entry:
    identity: tuple[str, str, str]  # uid, endpoint, Secret name
    client: Client


class ClusterClients:
    def __init__(
        self, client: Client, clusters: Informer, *, qps: float = 50, burst: int = 100
    ) -> None:
        self._meta = client
        self._clusters = clusters
        self._qps, self._burst = qps, burst
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()

    async def get(self, namespace: str, name: str) -> Client:
        """The client of Cluster ``namespace/name``; raises :class:`ClusterNotReady`."""
        key = f"{namespace}/{name}"
        cluster = self._clusters.store.get(key)
        if cluster is None:
            raise ClusterNotReady(f"Cluster {name} does not exist in namespace {namespace}")
        status = cluster.get("status") or {}
        secret = (status.get("adminKubeconfigSecretRef") or {}).get("name")
        endpoint = status.get("endpoint")
        if not secret or not endpoint:
            raise ClusterNotReady(f"Cluster {name} has no API endpoint yet")
        identity = (cluster["metadata"]["uid"], endpoint, secret)
        async with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.identity == identity:
                return entry.client
            if entry is not None:
                await entry.client.close()
                del self._entries[key]
            client = Client(await self._config(namespace, name, secret))
            self._entries[key] = _Entry(identity, client)
            return client

    def exists(self, namespace: str, name: str) -> bool:
        return self._clusters.store.get(f"{namespace}/{name}") is not None

    async def _config(self, namespace: str, cluster: str, secret: str) -> ClientConfig:
        try:
            obj = await self._meta.get(SECRETS, secret, namespace=namespace)
            text = base64.b64decode(obj["data"]["value"])
            return ClientConfig.from_kubeconfig_data(
                text, source=f"Secret {namespace}/{secret}", qps=self._qps, burst=self._burst
            )
        except NotFound:
            message = f"Cluster {cluster}'s kubeconfig Secret {secret} is missing"
            raise ClusterNotReady(message) from None
        except Forbidden:
            raise ClusterNotReady(not_permitted(namespace)) from None
        except (KeyError, ValueError, ConfigError) as e:
            raise ClusterNotReady(f"Cluster {cluster}'s kubeconfig Secret {secret}: {e}") from e

    async def close(self) -> None:
        async with self._lock:
            for entry in self._entries.values():
                await entry.client.close()
            self._entries.clear()
