"""Clients of the business clusters that Machines join, one per cluster.

Each is made from the kubeconfig Secret that the Cluster-Operator issued for kokpit's own
identity in that cluster (``<cluster>-kokpit-kubeconfig``): a Secret of kokpit's kubeconfig type
with a controller ownerReference to the Cluster's uid. Any other Secret of that name, or a
kubeconfig that reaches outside itself (file references, plugins, plain HTTP), is refused with a
message that names the Secret and never quotes its contents. A Secret rewritten in place is
noticed by its resourceVersion and the client is rebuilt.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

from kokpit.api.v1alpha1.cluster import KUBECONFIG_SECRET_TYPE, operator_kubeconfig_secret
from kokpit.runtime import Client, ClientConfig, ConfigError, Informer, NotFound, controlled_by
from kokpit.runtime.resources import SECRETS


class ClusterNotReady(Exception):
    """The business cluster cannot be reached yet; the message is for a person."""


@dataclass
class _Entry:
    identity: tuple[str, str, str]  # Cluster uid, endpoint, Secret resourceVersion
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
        endpoint = (cluster.get("status") or {}).get("endpoint")
        if not endpoint:
            raise ClusterNotReady(f"Cluster {name} has no API endpoint yet")
        secret_name = operator_kubeconfig_secret(name)
        try:
            secret = await self._meta.get(SECRETS, secret_name, namespace=namespace)
        except NotFound:
            raise ClusterNotReady(f"Cluster {name}'s Secret {secret_name} is missing") from None
        if secret.get("type") != KUBECONFIG_SECRET_TYPE or not controlled_by(
            secret, cluster["metadata"]["uid"]
        ):
            raise ClusterNotReady(
                f"Secret {secret_name} was not issued by the Cluster-Operator for Cluster "
                f"{name} (it must be of type {KUBECONFIG_SECRET_TYPE} and controlled by the "
                f"Cluster); it is not used"
            )
        identity = (cluster["metadata"]["uid"], endpoint, secret["metadata"]["resourceVersion"])
        async with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.identity == identity:
                return entry.client
            if entry is not None:
                await entry.client.close()
                del self._entries[key]
            client = Client(self._config(name, secret_name, secret))
            self._entries[key] = _Entry(identity, client)
            return client

    def exists(self, namespace: str, name: str) -> bool:
        return self._clusters.store.get(f"{namespace}/{name}") is not None

    def _config(self, cluster: str, secret_name: str, secret: dict[str, object]) -> ClientConfig:
        data = secret.get("data")
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, str):
            raise ClusterNotReady(f"Cluster {cluster}'s Secret {secret_name} has no value")
        try:
            text = base64.b64decode(value)
            return ClientConfig.from_kubeconfig_data(
                text, source=f"Secret {secret_name}", qps=self._qps, burst=self._burst
            )
        except (ValueError, ConfigError) as e:
            # ConfigError names the field at fault, never the contents.
            message = f"Cluster {cluster}'s Secret {secret_name}: {e}"
            raise ClusterNotReady(message) from None

    async def close(self) -> None:
        async with self._lock:
            for entry in self._entries.values():
                await entry.client.close()
            self._entries.clear()
