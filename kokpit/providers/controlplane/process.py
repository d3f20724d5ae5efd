"""The ``process`` runtime: a business control plane as local processes.

The embedded default behind ``make demo``: each component runs from the cached Kubernetes
binaries of its version (see :mod:`kokpit.local.assets`), detached, so it keeps running across
an operator restart; what runs is recorded per cluster in ``<root>/<uid>/state.json`` by the
same :class:`~kokpit.local.supervisor.Supervisor` as the local meta-cluster, and health is the
components' real ``/health``, ``/readyz`` and ``/healthz``.

The runtime never builds binaries (a build takes minutes; an operator must not block on it):
a version that is not cached is a :class:`~kokpit.providers.controlplane.PlanError` saying
which ``kokpit local build`` to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import fcntl
import ipaddress
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from kokpit.local import assets as local_assets
from kokpit.local import components
from kokpit.local.assets import Assets
from kokpit.local.components import Layout, Ports, Settings
from kokpit.local.supervisor import Supervisor
from kokpit.local.versions import RELEASES, Release
from kokpit.pki import (
    ADMIN,
    CONTROLLER_MANAGER,
    LEAF_VALIDITY,
    MACHINE_OPERATOR,
    MATERIAL,
    PKI,
    SCHEDULER,
    kubeconfig,
)
from kokpit.providers.controlplane import (
    NOT_RUNNING,
    UNHEALTHY,
    ComponentHealth,
    ComponentName,
    ComponentPlan,
    ControlPlane,
    PlanError,
)

#: The identities a business control plane's PKI issues client certificates for.
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER)
#: The PKI files on disk: those a component reads (:data:`~kokpit.pki.MATERIAL`) and the
#: admin certificate the kube-apiserver health probe presents (:mod:`kokpit.local.health`).
#: The other client keys are only inside their components' kubeconfigs.
ON_DISK = frozenset({*(f for files in MATERIAL.values() for f in files), "admin.crt", "admin.key"})
_BUILDERS = {
    "etcd": components.etcd,
    "kube-apiserver": components.apiserver,
    "kube-controller-manager": components.controller_manager,
    "kube-scheduler": components.scheduler,
}


#: What a business cluster needs beyond the local cluster's component lines (which the local
#: meta-cluster shares) for hosts' kubelets to join by TLS bootstrap: bootstrap tokens
#: authenticate, the Node authorizer and NodeRestriction confine each kubelet to its own Node
#: and pods, and the controller-manager publishes cluster-info (bootstrapsigner) and deletes
#: expired tokens (tokencleaner). Its csrapproving and csrsigning controllers are on by
#: default, signing with the cluster's CA. A package version's flags override these.
TLS_BOOTSTRAP_FLAGS: dict[ComponentName, dict[str, str]] = {
    "kube-apiserver": {
        "enable-bootstrap-token-auth": "true",
        "authorization-mode": "Node,RBAC",
        "enable-admission-plugins": "NodeRestriction",
    },
    "kube-controller-manager": {"controllers": "*,bootstrapsigner,tokencleaner"},
}


def first_service_ip(service_cidr: str) -> str:
    """The kubernetes Service's ClusterIP, which the API server's certificate must name: the
    address after the network address, as kube-apiserver picks it. Host bits are ignored, as
    kube-apiserver ignores them (a Cluster created before the API refused them may have some:
    refusing them here would fail its reconcile forever)."""
    return str(ipaddress.ip_network(service_cidr, strict=False).network_address + 1)


def business_pki(
    directory: Path,
    service_cidr: str,
    *,
    cluster: str,
    cluster_uid: str,
    leaf_validity: dt.timedelta = LEAF_VALIDITY,
    dns_names: tuple[str, ...] = (),
    etcd_dns: tuple[str, ...] = (),
) -> PKI:
    """The PKI of a business cluster (``cluster`` is its ``namespace/name``): what the
    Cluster-Operator generates into its Secret. ``dns_names`` and ``etcd_dns`` are the names
    of the kubernetes runtime's Services (the process runtime uses neither, and its etcd
    none of the etcd material: it listens on loopback only)."""
    return PKI(
        directory,
        clients=(*CLIENTS, MACHINE_OPERATOR),
        extra_ips=(first_service_ip(service_cidr),),
        cluster=cluster,
        cluster_uid=cluster_uid,
        leaf_validity=leaf_validity,
        dns_names=dns_names,
        etcd_dns=etcd_dns,
    )


def cached_assets(name: ComponentName, version: str) -> Assets:
    """Binaries for ``name`` at ``version`` from the cache (etcd: the release that ships it)."""
    candidates: list[Release] = list(RELEASES)
    for r in candidates:
        if name != "etcd" and r.version != version:
            continue
        directory = local_assets.release_dir(r)
        if not (directory / local_assets.MANIFEST).exists():
            continue
        if name == "etcd" and local_assets.read_manifest(directory).get("etcd") != version:
            continue
        found = local_assets.find(r)
        if found is not None:
            return found
    hint = version if name != "etcd" else "the Kubernetes release that ships this etcd"
    raise PlanError(
        f"no cached binaries for {name} {version}; run `kokpit local build --version {hint}`"
    )


class ProcessRuntime:
    def __init__(
        self, root: Path, assets_for: Callable[[ComponentName, str], Assets] = cached_assets
    ) -> None:
        self.root = root
        self.assets_for = assets_for

    def _layout(self, cp: ControlPlane) -> Layout:
        return Layout(self.root / cp.uid)

    async def apply(self, cp: ControlPlane, plan: ComponentPlan) -> None:
        await asyncio.to_thread(self._apply, cp, plan)

    def _apply(self, cp: ControlPlane, plan: ComponentPlan) -> None:
        # An operator task cancelled mid-apply leaves this thread running, and its successor
        # (or another replica) may apply to the same cluster: one at a time, across processes.
        layout = self._layout(cp)
        with _exclusive(layout):
            self._apply_locked(cp, plan, layout)

    def _apply_locked(self, cp: ControlPlane, plan: ComponentPlan, layout: Layout) -> None:
        supervisor = Supervisor(layout)
        layout.pki.write({name: data for name, data in cp.pki.items() if name in ON_DISK})
        ports = self._ports(supervisor)
        server = f"https://127.0.0.1:{ports.apiserver}"
        for who, path in (
            (ADMIN, layout.kubeconfig),
            (CONTROLLER_MANAGER, layout.component_kubeconfig(CONTROLLER_MANAGER.file)),
            (SCHEDULER, layout.component_kubeconfig(SCHEDULER.file)),
        ):
            text = kubeconfig.render_data(
                server=server,
                ca=cp.pki["ca.crt"],
                cert=cp.pki[f"{who.file}.crt"],
                key=cp.pki[f"{who.file}.key"],
                user=who.file,
                cluster_name=cp.key,
            )
            kubeconfig.save(path, text)
        flags = {**TLS_BOOTSTRAP_FLAGS.get(plan.name, {}), **plan.flags}
        settings = Settings(
            service_cidr=cp.service_cidr, pod_cidr=cp.pod_cidr, flags={plan.name: flags}
        )
        assets = self.assets_for(plan.name, plan.version)
        component = components.build(_BUILDERS[plan.name], assets, layout, ports, settings)
        probe = plan.health_probe
        health = component.health.probing(probe.path, probe.timeout_seconds)
        component = dataclasses.replace(component, health=health)
        supervisor.ensure(component)
        state = supervisor.state()
        supervisor.update(
            versions={**state.get("versions", {}), plan.name: plan.version},
            plans={**state.get("plans", {}), plan.name: plan.digest},
        )

    async def health(self, cp: ControlPlane, name: ComponentName) -> ComponentHealth:
        supervisor = Supervisor(self._layout(cp))
        state = supervisor.state()
        version = state.get("versions", {}).get(name)
        digest = state.get("plans", {}).get(name)
        if not supervisor.running(name):
            return ComponentHealth(False, None, f"{name} is not running", digest, NOT_RUNNING)
        ok = await asyncio.to_thread(supervisor.healthy, name)
        if ok:
            return ComponentHealth(True, version, plan=digest)
        url = state.get("processes", {}).get(name, {}).get("health", {}).get("url", "")
        detail = f"{name} does not pass its health check {url}".rstrip()
        return ComponentHealth(False, version, detail, digest, UNHEALTHY)

    async def restart(self, cp: ControlPlane, name: ComponentName) -> None:
        """Start ``name`` again with the command line it last ran (a dead process, or one that
        failed its health check for too long); the Cluster-Operator decides when, within its
        restart budget."""

        def restart() -> None:
            layout = self._layout(cp)
            with _exclusive(layout):
                Supervisor(layout).respawn(name)

        await asyncio.to_thread(restart)

    async def endpoint(self, cp: ControlPlane) -> str | None:
        ports = Supervisor(self._layout(cp)).state().get("ports")
        return f"https://127.0.0.1:{ports['apiserver']}" if ports else None

    async def delete(self, cp: ControlPlane) -> None:
        layout = self._layout(cp)

        def delete() -> None:
            with _exclusive(layout):
                Supervisor(layout).stop_all()
            shutil.rmtree(layout.root, ignore_errors=True)

        await asyncio.to_thread(delete)

    def _ports(self, supervisor: Supervisor) -> Ports:
        """Chosen once per cluster and kept: its kubeconfigs and endpoint depend on them (and
        while the cluster runs, its own processes hold them)."""
        recorded = supervisor.state().get("ports")
        if recorded:
            return Ports(**recorded)
        ports = Ports.choose({})
        supervisor.update(ports=dataclasses.asdict(ports))
        return ports


@contextlib.contextmanager
def _exclusive(layout: Layout) -> Iterator[None]:
    """One writer per control plane at a time, across threads and processes."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with (layout.root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
