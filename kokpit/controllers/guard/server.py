"""The guard over HTTPS, for operators that are not kokpit's and not written in Python.

    POST /v1/acquire   {"action", "id", "target", "cluster"?, "labels"?}  → a verdict
    POST /v1/assess    the same, a dry run: what acquire would answer now, recording nothing
    POST /v1/release   the same, with "outcome": Succeeded | Failed | Cancelled

Every request carries ``Authorization: Bearer <Kubernetes token>``; the caller is who the
meta-cluster says the token is (:mod:`.reviews`), and may call a verb only where RBAC lets it
``create`` ``riskpolicies/<verb>`` in kokpit.io. The audit trail names that caller. A verdict
is ``{"allowed": bool, "reason": str, "retryAfterSeconds": float | null}``; a request the
server cannot take is a 4xx with ``{"error": <what is wrong>}``.

Every replica serves (decisions hold across replicas through the ledgers); none needs to lead.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any, cast, get_args

from aiohttp import web

from kokpit.api.names import QUALIFIED_NAME_MAX
from kokpit.api.v1alpha1.riskpolicy import RiskyAction
from kokpit.controllers.guard.reviews import Reviews
from kokpit.providers.guard import Outcome, RiskRequest, Verdict
from kokpit.providers.guard.local import LocalGuard
from kokpit.runtime import ApiError
from kokpit.runtime.log import get_logger

ACTIONS = frozenset(get_args(RiskyAction))
OUTCOMES = frozenset(get_args(Outcome))
#: Bounds on what a caller sends (the ledger stores ids and targets; labels pick a domain).
ID_MAX, TARGET_MAX, LABELS_MAX = 253, 512, 64
BODY_MAX = 64 * 1024


class BadRequest(Exception):
    pass


class GuardServer:
    """An HTTPS server answering for ``guard``; a manager runnable on every replica."""

    needs_leader = False

    def __init__(
        self,
        guard: LocalGuard,
        reviews: Reviews,
        *,
        host: str,
        port: int,
        cert_file: Path,
        key_file: Path,
    ) -> None:
        self._guard = guard
        self._reviews = reviews
        self._host, self._port = host, port
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert_file, key_file)
        self.port: int | None = None
        self._log = get_logger("kokpit.guard.server")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=BODY_MAX)
        app.router.add_post("/v1/acquire", self._handler("acquire"))
        app.router.add_post("/v1/assess", self._handler("assess"))
        app.router.add_post("/v1/release", self._handler("release"))
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, ssl_context=self._tls)
            await site.start()
            self.port = runner.addresses[0][1]
            self._log.info("serving the guard", extra={"port": self.port})
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    def _handler(self, verb: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or not header[7:].strip():
                return _error(401, "send a Kubernetes bearer token (Authorization: Bearer ...)")
            try:
                caller = await self._reviews.authenticate(header[7:].strip())
                if caller is None:
                    return _error(401, "the meta-cluster does not know this token")
                allowed, why = await self._reviews.authorize(caller, verb)
            except ApiError as e:
                self._log.warning("review failed", extra={"error": repr(e)})
                return _error(503, "the meta-cluster could not review the caller; try again")
            if not allowed:
                rule = f"create on riskpolicies/{verb} in kokpit.io"
                because = f" ({why})" if why else ""
                return _error(
                    403, f"{caller.username} may not {verb}: no RBAC rule grants {rule}{because}"
                )
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                return _error(400, f"the body is not JSON: {e}")
            try:
                risk, outcome = _parse(body, verb, caller.username)
            except BadRequest as e:
                return _error(400, str(e))
            if verb == "release" and outcome is not None:
                await self._guard.release(risk, outcome)
                return web.json_response({"released": True})
            verdict = await (
                self._guard.assess(risk) if verb == "assess" else self._guard.acquire(risk)
            )
            return web.json_response(_verdict(verdict))

        return handle


def _parse(body: Any, verb: str, username: str) -> tuple[RiskRequest, Outcome | None]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    action = body.get("action")
    if action not in ACTIONS:
        raise BadRequest(f"action must be one of {', '.join(sorted(ACTIONS))}")
    key, target = body.get("id"), body.get("target")
    if not isinstance(key, str) or not 0 < len(key) <= ID_MAX:
        raise BadRequest(f"id must be a string of 1 to {ID_MAX} characters, unique to the action")
    if not isinstance(target, str) or not 0 < len(target) <= TARGET_MAX:
        raise BadRequest(f"target must be a string of 1 to {TARGET_MAX} characters")
    cluster = body.get("cluster")
    if cluster is not None and (
        not isinstance(cluster, str) or cluster.count("/") != 1 or len(cluster) > 2 * 253 + 1
    ):
        raise BadRequest("cluster must be the Cluster's namespace/name")
    labels = body.get("labels") or {}
    if (
        not isinstance(labels, dict)
        or len(labels) > LABELS_MAX
        or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and len(k) <= QUALIFIED_NAME_MAX
            and len(v) <= 63
            for k, v in labels.items()
        )
    ):
        raise BadRequest(f"labels must be at most {LABELS_MAX} label keys and values")
    outcome = body.get("outcome")
    if verb == "release" and outcome not in OUTCOMES:
        raise BadRequest(f"outcome must be one of {', '.join(sorted(OUTCOMES))}")
    request = RiskRequest(cast(RiskyAction, action), key, target, cluster, labels, username)
    return request, cast(Outcome, outcome) if verb == "release" else None


def _verdict(verdict: Verdict) -> dict[str, Any]:
    return {
        "allowed": verdict.allowed,
        "reason": verdict.reason,
        "retryAfterSeconds": verdict.retry_after,
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
