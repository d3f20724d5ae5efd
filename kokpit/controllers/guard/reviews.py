"""Who is calling, and may they: asked of the meta-cluster, as Kubernetes' extension API
servers and webhooks do, so kokpit keeps no user database of its own.

A caller sends its Kubernetes bearer token; a TokenReview tells who it is (an operator's
ServiceAccount, a person's token); a SubjectAccessReview tells whether RBAC lets that user
``create`` the virtual subresource ``riskpolicies/<verb>`` of kokpit.io — so letting an
operator ask is an ordinary ClusterRole rule. Answers are kept for a short while (as the API
server's own webhook authenticator does), so a busy caller costs two reviews per ttl, not two
per ask; tokens are kept only as their SHA-256.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kokpit.runtime import Client
from kokpit.runtime.resources import SUBJECT_ACCESS_REVIEWS, TOKEN_REVIEWS

V = TypeVar("V")


@dataclass(frozen=True)
class Caller:
    username: str
    uid: str
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class _Answers(Generic[V]):
    """At most ``size`` answers, each for ``ttl`` seconds."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self._ttl, self._size, self._clock = ttl, size, clock
        self._entries: OrderedDict[Hashable, tuple[V, float]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[V] | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= self._clock():
            return None
        return (entry[0],)

    def put(self, key: Hashable, value: V) -> None:
        self._entries[key] = (value, self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class Reviews:
    def __init__(
        self,
        client: Client,
        *,
        ttl: float = 30.0,
        size: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._callers: _Answers[Caller | None] = _Answers(ttl, size, clock)
        self._decisions: _Answers[tuple[bool, str]] = _Answers(ttl, size, clock)

    async def authenticate(self, token: str) -> Caller | None:
        """The caller ``token`` belongs to, or None when the API server does not know it."""
        key = hashlib.sha256(token.encode()).hexdigest()
        if (cached := self._callers.get(key)) is not None:
            return cached[0]
        review = await self._client.create(
            TOKEN_REVIEWS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
        )
        status: dict[str, Any] = review.get("status") or {}
        caller = None
        if status.get("authenticated"):
            user = status.get("user") or {}
            extra = tuple(sorted((k, tuple(v)) for k, v in (user.get("extra") or {}).items()))
            caller = Caller(
                str(user.get("username", "")),
                str(user.get("uid", "")),
                tuple(user.get("groups") or ()),
                extra,
            )
        self._callers.put(key, caller)
        return caller

    async def authorize(self, caller: Caller, verb: str) -> tuple[bool, str]:
        """Whether ``caller`` may ``create riskpolicies/<verb>``, and the authorizer's reason."""
        key = (caller, verb)
        if (cached := self._decisions.get(key)) is not None:
            return cached[0]
        review = await self._client.create(
            SUBJECT_ACCESS_REVIEWS,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": caller.username,
                    "uid": caller.uid,
                    "groups": list(caller.groups),
                    "extra": {k: list(v) for k, v in caller.extra},
                    "resourceAttributes": {
                        "group": "kokpit.io",
                        "resource": "riskpolicies",
                        "subresource": verb,
                        "verb": "create",
                    },
                },
            },
        )
        status: dict[str, Any] = review.get("status") or {}
        answer = (bool(status.get("allowed")), str(status.get("reason") or ""))
        self._decisions.put(key, answer)
        return answer
