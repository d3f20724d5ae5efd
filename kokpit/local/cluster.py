"""The embedded local meta-cluster: a real Kubernetes control plane as local processes.

``up`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok in that
order, each only after the one before is healthy, on free loopback ports. Everything the
cluster is lives under one data directory (see :class:`~kokpit.local.components.Layout`):
certificates, etcd's data, kubeconfigs, logs, and ``state.json`` with the ports and the
processes. That file is written after every start, so a ``down`` can always find what an
interrupted ``up`` left running, and it is what ``status`` reads; ``down`` keeps everything
else, so objects survive ``down``/``up``.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kokpit.local import component_images, components, dns, realnode
from kokpit.local.assets import Assets
from kokpit.local.components import Layout, Ports, Settings
from kokpit.local.supervisor import ComponentStatus, Supervisor
from kokpit.pki import ADMIN, CONTROLLER_MANAGER, KWOK, SCHEDULER, kubeconfig


class ClusterError(RuntimeError):
    """The local cluster cannot do what was asked; the message says why."""


class AlreadyRunningError(ClusterError):
    pass


@dataclass(frozen=True)
class ClusterStatus:
    data_dir: Path
    kubernetes_version: str | None
    server: str | None
    kubeconfig: Path
    components: list[ComponentStatus]

    @property
    def running(self) -> bool:
        return bool(self.components) and all(c.running for c in self.components)

    @property
    def healthy(self) -> bool:
        return self.running and all(c.healthy for c in self.components)


class LocalCluster:
    """A local meta-cluster in ``data_dir``; cheap to construct, it only reads state files."""

    def __init__(self, data_dir: Path, *, name: str = "kokpit-local") -> None:
        self.layout = Layout(data_dir)
        self.name = name
        self.supervisor = Supervisor(self.layout)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def server(self) -> str | None:
        ports = self.supervisor.state().get("ports")
        return f"https://127.0.0.1:{ports['apiserver']}" if ports else None

    def up(
        self,
        assets: Assets,
        *,
        settings: Settings | None = None,
        progress: Callable[[str], None] = print,
        real_nodes: int = 0,
    ) -> None:
        """Start every component and wait until each is healthy, then ``real_nodes`` real
        nodes (kubelet, containerd, kube-proxy: :mod:`kokpit.local.realnode`) until Ready.

        Raises :class:`AlreadyRunningError` if the cluster runs already, and
        :class:`ComponentFailedError` if a component fails to start, after stopping the
        components this call started.
        """
        settings = settings or Settings()
        current = self.status()
        if current.running:
            raise AlreadyRunningError(
                f"the local cluster in {self.layout.root} is already running "
                f"(Kubernetes {current.kubernetes_version}, {current.server}); "
                f"KUBECONFIG={self.kubeconfig}"
            )
        if current.components:  # some component died; start clean from what is on disk
            progress("stopping what is left of an earlier run")
            self.down()

        self.layout.root.mkdir(parents=True, exist_ok=True)
        ports = Ports.choose(self.supervisor.state().get("ports", {}))
        self.layout.pki.ensure()
        if real_nodes:
            settings = realnode.prepare(self.layout, settings, real_nodes)
        self._write_kubeconfigs(ports)
        self.supervisor.update(
            kubernetes=assets.kubernetes_version,
            assets=str(assets.root),
            ports=dataclasses.asdict(ports),
        )
        try:
            for make in components.ALL:
                component = components.build(make, assets, self.layout, ports, settings)
                started = time.monotonic()
                self.supervisor.start(component)
                self.supervisor.wait_healthy(component, settings.start_timeout_s)
                progress(f"  {component.name:<24} ready in {time.monotonic() - started:4.1f} s")
            if real_nodes:
                server = f"https://127.0.0.1:{ports.apiserver}"
                # Control-plane and CoreDNS images of every built release, imported below.
                component_images.ensure_images(assets, progress)
                realnode.up(
                    self.layout,
                    self.supervisor,
                    assets,
                    real_nodes,
                    server=server,
                    settings=settings,
                    progress=progress,
                )
                real = {realnode.LABEL: "true"}
                dns.start(self.layout, assets, server=server, node_selector=real, progress=progress)
        except BaseException:
            self.down()
            raise

    def down(self, *, wipe: bool = False) -> None:
        """Stop every component (real nodes first, putting the machine back as they found
        it; then kwok, ..., etcd last); ``wipe`` also deletes all data."""
        realnode.down(self.layout, self.supervisor)
        self.supervisor.stop_all()
        if wipe:
            shutil.rmtree(self.layout.root, ignore_errors=True)

    def restart(self, name: str, *, timeout_s: float = 90.0) -> None:
        """Stop one component and start it again with the same command line (for fault tests
        and for picking up new flags); returns once it is healthy again."""
        try:
            self.supervisor.restart(name, timeout_s=timeout_s)
        except KeyError as e:
            raise ClusterError(str(e)) from e

    def status(self) -> ClusterStatus:
        return ClusterStatus(
            data_dir=self.layout.root,
            kubernetes_version=self.supervisor.state().get("kubernetes"),
            server=self.server,
            kubeconfig=self.kubeconfig,
            components=self.supervisor.statuses(),
        )

    def _write_kubeconfigs(self, ports: Ports) -> None:
        server = f"https://127.0.0.1:{ports.apiserver}"
        pki = self.layout.pki
        kubeconfig.write(self.kubeconfig, server=server, pki=pki, who=ADMIN, cluster_name=self.name)
        for who in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            path = self.layout.component_kubeconfig(who.file)
            kubeconfig.write(path, server=server, pki=pki, who=who, cluster_name=self.name)
