"""The guard asked over HTTPS (``kokpit operator guard``), for a Python program that does not
hold one in-process: the same :class:`~kokpit.providers.guard.Guard`, with the caller's
Kubernetes token as its identity. Any language does the same with a JSON POST (see
docs/risk-control.md)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from kokpit.providers.guard import Outcome, RiskRequest, Verdict


class GuardError(Exception):
    """The guard did not answer (unreachable, refused the caller, or the request)."""


class RemoteGuard:
    def __init__(self, url: str, token: str, *, ca_pem: str | None = None, timeout: float = 30.0):
        self._url = url.rstrip("/")
        self._token = token
        self._tls = (
            ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def acquire(self, request: RiskRequest) -> Verdict:
        return _verdict(await self._post("acquire", _body(request)))

    async def assess(self, request: RiskRequest) -> Verdict:
        """What acquire would answer now; records nothing."""
        return _verdict(await self._post("assess", _body(request)))

    async def release(self, request: RiskRequest, outcome: Outcome) -> None:
        await self._post("release", {**_body(request), "outcome": outcome})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _post(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.post(
                f"{self._url}/v1/{verb}", json=body, headers=headers, ssl=self._tls
            ) as response:
                answer: dict[str, Any] = await response.json(content_type=None)
                if response.status != 200:
                    raise GuardError(f"{response.status}: {answer.get('error', answer)}")
                return answer
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise GuardError(f"the guard at {self._url} did not answer: {e}") from e


def _body(request: RiskRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"action": request.action, "id": request.id, "target": request.target}
    if request.cluster is not None:
        body["cluster"] = request.cluster
    if request.labels:
        body["labels"] = dict(request.labels)
    return body


def _verdict(answer: dict[str, Any]) -> Verdict:
    return Verdict(bool(answer["allowed"]), str(answer["reason"]), answer.get("retryAfterSeconds"))
