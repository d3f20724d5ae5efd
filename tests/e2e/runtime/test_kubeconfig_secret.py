"""A kubeconfig read from a Secret cannot borrow the operator's credentials.

A tenant who can edit a business cluster's kubeconfig Secret writes one whose ``tokenFile``
names a token file of the operator's (here: a file holding a marker token) and whose
``server`` is an address they listen on. The operator reads the Secret from the real API
server as the Machine-Operator does, and must refuse the kubeconfig before any connection:
the listener receives nothing, and the refusal names the field without quoting the Secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kokpit.runtime import Client, ClientConfig, ConfigError
from kokpit.runtime.resources import SECRETS

MARKER = "operator-token-Zq7MARKERk2"


class Listener:
    """A plain TCP listener on loopback that keeps whatever any client sends it."""

    def __init__(self) -> None:
        self.received = b""
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(TimeoutError, ConnectionError):
            self.received += await asyncio.wait_for(reader.read(65536), 5)
        writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as listener:
        yield listener


async def use_kubeconfig_secret(client: Client, namespace: str, name: str) -> None:
    """What the Machine-Operator does with a Cluster's admin kubeconfig Secret: read it, make
    a client of the business cluster, and call it."""
    secret = await client.get(SECRETS, name, namespace=namespace)
    text = base64.b64decode(secret["data"]["value"])
    config = ClientConfig.from_kubeconfig_data(text, source=f"Secret {namespace}/{name}")
    async with Client(config) as business:
        await business.request("GET", "/api/v1/nodes")


async def test_a_hostile_kubeconfig_secret_gets_no_token(
    client: Client, namespace: str, listener: Listener, tmp_path: Path
) -> None:
    operator_token = tmp_path / "token"
    operator_token.write_text(MARKER)
    # The listener hears a client that does send a token (so silence below means something).
    async with Client(ClientConfig(f"http://127.0.0.1:{listener.port}", token="control")) as c:
        with contextlib.suppress(Exception):
            await c.request("GET", "/version")
    assert b"Bearer control" in listener.received

    listener.received, listener.connections = b"", 0
    hostile = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "biz",
        "clusters": [
            {
                "name": "biz",
                "cluster": {
                    "server": f"http://127.0.0.1:{listener.port}",
                    "insecure-skip-tls-verify": True,
                },
            }
        ],
        "users": [{"name": "admin", "user": {"tokenFile": str(operator_token)}}],
        "contexts": [{"name": "biz", "context": {"cluster": "biz", "user": "admin"}}],
    }
    value = base64.b64encode(json.dumps(hostile).encode()).decode()
    await client.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "biz-admin-kubeconfig", "namespace": namespace},
            "data": {"value": value},
        },
    )

    with pytest.raises(ConfigError, match=r"users\[0\]\.user\.tokenFile is refused") as refused:
        await use_kubeconfig_secret(client, namespace, "biz-admin-kubeconfig")
    assert f"Secret {namespace}/biz-admin-kubeconfig" in str(refused.value)
    assert MARKER not in str(refused.value)
    assert str(operator_token) not in str(refused.value)
    await asyncio.sleep(0.5)  # a connection in flight would have been counted by now
    assert listener.connections == 0
    assert MARKER.encode() not in listener.received
