"""A real host's kubelet joins by TLS bootstrap: before the kubelet package is installed, the
host gets a bootstrap kubeconfig built from its business cluster's current bootstrap token.

The token comes from ``<cluster>-bootstrap-token`` (:func:`~kokpit.api.v1alpha1.cluster.
bootstrap_token_secret`), which the Cluster-Operator issues: its type must be
``kokpit.io/bootstrap-token`` and its controller the Machine's Cluster, or it is refused (a
tenant could otherwise point hosts at an API server of their choosing). The kubeconfig is
written by a constant script to :data:`BOOTSTRAP_KUBECONFIG` under ``$KOKPIT_ROOT``, mode
0600, atomically; its text reaches the script as a quoted environment value on the step's
stdin, never on a command line, and no error or Event quotes it.

The kubelet package's steps get the path (``KOKPIT_BOOTSTRAP_KUBECONFIG``), the taints to
register with (``KOKPIT_REGISTER_WITH_TAINTS``: the Machine's, plus kokpit's not-ready taint
while gates are pending) and the node's address (``KOKPIT_NODE_IP``); see :func:`kubelet_env`.
Only hosts whose Nodes come from their own kubelet get any of this: KWOK's are registered by
kokpit (:mod:`kokpit.providers.machine.kubelet`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Set
from datetime import UTC, datetime

from kokpit.api.v1alpha1.cluster import BOOTSTRAP_TOKEN_SECRET_TYPE, bootstrap_token_secret
from kokpit.controllers.machine import gates
from kokpit.controllers.machine.host import not_permitted
from kokpit.controllers.machine.options import MachineOptions
from kokpit.controllers.machine.scope import MachineScope, Object
from kokpit.pki.bootstrap import InvalidBootstrapToken, kubeconfig, parse
from kokpit.providers.machine import Executor, Step
from kokpit.runtime import Client, Forbidden, NotFound, Recently, controlled_by
from kokpit.runtime.resources import SECRETS
from kokpit.runtime.store import Store

#: Where a host's bootstrap kubeconfig is, under ``$KOKPIT_ROOT`` (kubeadm's path).
BOOTSTRAP_KUBECONFIG = "/etc/kubernetes/bootstrap-kubelet.conf"
#: The lock name of the delivery step on the host (not a package a version can name: those
#: are the package's own).
STEP_PACKAGE = "kokpit-bootstrap-kubeconfig"

#: Writes ``$KOKPIT_BOOTSTRAP_KUBECONFIG_TEXT`` to the path, 0600 from the first byte,
#: replacing the old file in one rename. Constant: no value of a resource is part of it.
WRITE_SCRIPT = textwrap.dedent(
    f"""
    dest="$KOKPIT_ROOT{BOOTSTRAP_KUBECONFIG}"
    (umask 022 && mkdir -p -- "${{dest%/*}}")
    umask 077
    tmp=$(mktemp -- "$dest.XXXXXX")
    trap 'rm -f -- "$tmp"' EXIT
    printf '%s' "$KOKPIT_BOOTSTRAP_KUBECONFIG_TEXT" > "$tmp"
    chmod 0600 -- "$tmp"
    mv -f -- "$tmp" "$dest"
    trap - EXIT
    """
).strip()


def kubelet_env(spec: Object) -> dict[str, str]:
    """What a Kubelet package's steps are told about the node they start: where its bootstrap
    kubeconfig is, which taints it registers with (``key[=value]:effect``, comma-separated, as
    ``--register-with-taints`` takes them; keys and values are validated by the API server,
    so none holds a comma), and its address."""
    taints = ",".join(
        f"{t['key']}{'=' + t['value'] if t.get('value') else ''}:{t['effect']}"
        for t in gates.registration_taints(spec)
    )
    return {
        "KOKPIT_BOOTSTRAP_KUBECONFIG": BOOTSTRAP_KUBECONFIG,
        "KOKPIT_REGISTER_WITH_TAINTS": taints,
        "KOKPIT_NODE_IP": str(spec["address"]),
    }


class JoinPhases:
    def __init__(
        self,
        client: Client,
        clusters: Store,
        own_kubelet: Set[str],
        options: MachineOptions,
    ) -> None:
        self._client = client
        self._clusters = clusters
        #: The executors whose hosts run their own kubelet (the others' Nodes are KWOK's).
        self._own_kubelet = own_kubelet
        self._options = options
        #: The token (by id) each Machine's host was given, until it expires: no step again.
        self._delivered: Recently[str] = Recently(0)

    def needed(self, scope: MachineScope) -> bool:
        """The host's own kubelet is still to join: a kubelet package, an executor whose
        hosts run their kubelet, and no Node yet."""
        return (
            scope.has_kubelet
            and scope.spec.get("executor", "ssh") in self._own_kubelet
            and not scope.status.get("nodeName")
        )

    async def deliver(self, scope: MachineScope, executor: Executor) -> bool:
        """Before any package changes: the host's bootstrap kubeconfig, current. False (with
        the reason in ``node_problem``) ends this reconcile: no kubelet is installed that
        could not join."""
        if not self.needed(scope) or scope.host is None:
            return True
        text = await self._bootstrap_kubeconfig(scope)
        if text is None:
            return False
        token_id, expires_in, config = text
        if self._delivered.holds(scope.uid, token_id):
            return True
        step = Step(
            package=STEP_PACKAGE,
            action="install",
            version=token_id,
            script=WRITE_SCRIPT,
            env={"KOKPIT_BOOTSTRAP_KUBECONFIG_TEXT": config},
            timeout_seconds=60,
        )
        result = await executor.run(scope.host, step)
        if not result.ok:
            message = (
                f"cannot write the bootstrap kubeconfig to {BOOTSTRAP_KUBECONFIG}: exit "
                f"{result.exit_status}: {result.stderr_tail or 'no stderr'}"
            )
            scope.node_problem = ("BootstrapNotDelivered", message)
            scope.event("Warning", "BootstrapNotDelivered", message)
            scope.requeue(self._options.retry_interval)
            return False
        self._delivered.remember(scope.uid, token_id, ttl=expires_in)
        scope.event(
            "Normal",
            "BootstrapDelivered",
            f"bootstrap kubeconfig (token {token_id}) written to {BOOTSTRAP_KUBECONFIG}",
        )
        return True

    def forget(self, scope: MachineScope) -> None:
        self._delivered.forget(scope.uid)

    async def _bootstrap_kubeconfig(self, scope: MachineScope) -> tuple[str, float, str] | None:
        """(token id, seconds until it expires, kubeconfig text) from the Cluster's Secret, or
        None with ``node_problem`` set."""
        name = bootstrap_token_secret(scope.cluster_name)
        cluster = self._clusters.get(scope.cluster_key)
        try:
            secret = await self._client.get(SECRETS, name, namespace=scope.namespace)
        except NotFound:
            secret = None
        except Forbidden:
            self._wait(scope, "Forbidden", not_permitted(scope.namespace), slow=True)
            return None
        if cluster is None or secret is None:
            self._wait(
                scope,
                "BootstrapTokenNotIssued",
                f"waiting for the Cluster-Operator to issue Secret {name} (the bootstrap token "
                f"the kubelet joins with)",
            )
            return None
        if secret.get("type") != BOOTSTRAP_TOKEN_SECRET_TYPE or not controlled_by(
            secret, cluster["metadata"]["uid"]
        ):
            message = (
                f"Secret {name} is not the bootstrap token Cluster {scope.cluster_name} issued "
                f"(type {BOOTSTRAP_TOKEN_SECRET_TYPE}, controlled by the Cluster); kokpit will "
                f"not hand it to the host"
            )
            scope.event("Warning", "BootstrapTokenNotOwned", message)
            self._wait(scope, "BootstrapTokenNotOwned", message, slow=True)
            return None
        try:
            credentials = parse(secret.get("data") or {}, secret=name)
        except InvalidBootstrapToken as e:
            self._wait(scope, "InvalidBootstrapToken", str(e), slow=True)
            return None
        left = (credentials.token.expiration - datetime.now(UTC)).total_seconds()
        if left <= 0:
            self._wait(
                scope,
                "BootstrapTokenExpired",
                f"the bootstrap token in Secret {name} has expired; waiting for its successor",
            )
            return None
        text = kubeconfig(credentials, cluster_name=scope.cluster_name)
        return credentials.token.token_id, left, text

    def _wait(self, scope: MachineScope, reason: str, message: str, *, slow: bool = False) -> None:
        scope.node_problem = (reason, message)
        scope.requeue(self._options.max_backoff if slow else self._options.retry_interval)
