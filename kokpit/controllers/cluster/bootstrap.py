"""Bootstrap tokens: what a host's own kubelet joins its business cluster with.

Per Cluster, one current token (:mod:`kokpit.pki.bootstrap`): a ``bootstrap.kubernetes.io/token``
Secret in the business cluster's kube-system, written with the admin certificate, and its
mirror ``<cluster>-bootstrap-token`` here (type ``kokpit.io/bootstrap-token``, controlled by the
Cluster), from which the Machine-Operator builds each host's bootstrap kubeconfig.

A token expires (``ClusterOptions.bootstrap_token_ttl_seconds``): a leaked one is good for a
while only. A successor is issued once ``bootstrap_token_renew_share`` of its life has passed,
so a host that fetched the old one still has time to join with it; the old one is not
deleted, the business cluster's tokencleaner deletes it when it expires. A token whose Secret
is not in the business cluster (deleted by hand, a control plane rebuilt) is replaced when it
is next looked for: at the operator's start, and whenever its successor would be due; a mirror
that does not parse or names another endpoint or CA is replaced at the next reconcile.

What the token may do is bound by :mod:`.access`: ask for a node client certificate, which
is then approved and signed automatically. No token, secret or CA content reaches an Event,
a condition or a log line; the token's id (its public half) does.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import aiohttp

from kokpit.api.v1alpha1.cluster import BOOTSTRAP_TOKEN_SECRET_TYPE, bootstrap_token_secret
from kokpit.controllers.cluster import access
from kokpit.controllers.cluster.options import ClusterOptions
from kokpit.controllers.cluster.scope import ClusterScope, Object
from kokpit.pki.bootstrap import (
    BootstrapCredentials,
    BootstrapToken,
    InvalidBootstrapToken,
    parse,
)
from kokpit.runtime import (
    ApiError,
    Client,
    ClientConfig,
    NotFound,
    Recently,
    controlled_by,
    owner_reference,
)
from kokpit.runtime.client import NO_RETRY
from kokpit.runtime.config import Resolve
from kokpit.runtime.resources import SECRETS


class BootstrapTokens:
    def __init__(
        self, client: Client, options: ClusterOptions, resolve: Resolve | None = None
    ) -> None:
        self._client = client
        self._options = options
        self._resolve = resolve
        #: Tokens (by id) found in their business cluster lately, until their successor is
        #: due: looking costs a request to the business cluster.
        self._present: Recently[str] = Recently(0)

    async def reconcile_bootstrap_token(self, scope: ClusterScope) -> bool:
        """Last: the cluster must be Running, with its endpoint known."""
        endpoint = scope.status.get("endpoint")
        cp = scope.control_plane
        if not endpoint or cp is None or scope.status.get("phase") != "Running":
            return True
        name = bootstrap_token_secret(scope.name)
        try:
            mirror = await self._client.get(SECRETS, name, namespace=scope.namespace)
        except NotFound:
            mirror = None
        if mirror is not None and not controlled_by(mirror, scope.uid):
            message = (
                f"Secret {name} exists and is not owned by this Cluster; kokpit will not use, "
                f"change or delete it, and hosts cannot join until it is deleted or renamed"
            )
            scope.blocked = ("SecretNotOwned", message)
            scope.event("Warning", "SecretNotOwned", message)
            scope.requeue(self._options.failed_retry_interval)
            return False
        current = _current(mirror, name, endpoint, cp.pki["ca.crt"])
        now = datetime.now(UTC)
        admin = access.admin_config(endpoint, cp.pki, self._resolve)
        share = self._options.bootstrap_token_renew_share
        try:
            if current is not None and now < current.token.renewal_at(share):
                due_in = (current.token.renewal_at(share) - now).total_seconds()
                scope.requeue(due_in + 1)
                if self._present.holds(scope.uid, current.token.token_id):
                    return True
                if await self._in_business_cluster(admin, current.token):
                    self._present.remember(scope.uid, current.token.token_id, ttl=due_in)
                    return True
            token = await self._issue(scope, admin, name, endpoint, cp.pki["ca.crt"], now)
        except (ApiError, aiohttp.ClientError, TimeoutError) as e:
            message = f"cannot issue a bootstrap token in the business cluster: {e}"
            scope.event("Warning", "BootstrapTokenNotIssued", message)
            scope.requeue(self._options.failed_retry_interval)
            return False
        due_in = (token.renewal_at(share) - now).total_seconds()
        self._present.remember(scope.uid, token.token_id, ttl=due_in)
        scope.requeue(due_in + 1)
        return True

    def forget(self, uid: str) -> None:
        self._present.forget(uid)

    async def _in_business_cluster(self, admin: ClientConfig, token: BootstrapToken) -> bool:
        async with Client(admin, retry=NO_RETRY) as business:
            try:
                found = await business.get(SECRETS, token.secret_name, namespace="kube-system")
            except NotFound:
                return False
        # Ours, and not somebody's of the same name: the secret half must match (compared,
        # never shown).
        stored = BootstrapToken.secret_of(found)
        return stored is not None and stored == token.secret

    async def _issue(
        self,
        scope: ClusterScope,
        admin: ClientConfig,
        name: str,
        endpoint: str,
        ca: bytes,
        now: datetime,
    ) -> BootstrapToken:
        """A new token: in the business cluster first, then its mirror here (a mirror never
        names a token the business cluster does not know)."""
        lifetime = timedelta(seconds=self._options.bootstrap_token_ttl_seconds)
        token = BootstrapToken.new(lifetime, now)
        description = f"kokpit: hosts of Cluster {scope.key} join with it"
        async with Client(admin, retry=NO_RETRY) as business:
            await business.probe(seconds=5)
            await business.create(SECRETS, token.token_secret(description))
        credentials = BootstrapCredentials(token, endpoint, ca)
        await self._client.apply(
            SECRETS,
            _mirror(scope.cluster, name, credentials),
            field_manager=self._options.field_manager,
        )
        expires = token.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
        scope.event(
            "Normal",
            "BootstrapTokenIssued",
            f"bootstrap token {token.token_id} for hosts joining, valid until {expires}, "
            f"in Secret {name}",
        )
        return token


def _current(
    mirror: Object | None, name: str, endpoint: str, ca: bytes
) -> BootstrapCredentials | None:
    """The mirror's credentials if they are still the right ones for this cluster (parsed,
    same endpoint and CA); None means a new token is issued."""
    if mirror is None:
        return None
    try:
        found = parse(mirror.get("data") or {}, secret=name)
    except InvalidBootstrapToken:
        return None
    if found.server != endpoint or found.ca != ca:
        return None
    return found


def _mirror(owner: Object, name: str, credentials: BootstrapCredentials) -> Object:
    meta = owner["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": BOOTSTRAP_TOKEN_SECRET_TYPE,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {"kokpit.io/cluster": meta["name"]},
            "ownerReferences": [owner_reference(owner)],
        },
        "data": {k: base64.b64encode(v).decode() for k, v in credentials.mirror().items()},
    }
