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
import json
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kokpit.local import components, kubeconfig, process
from kokpit.local.assets import Assets
from kokpit.local.components import Component, Health, Layout, Ports, Settings
from kokpit.local.health import healthy
from kokpit.local.pki import ADMIN, CONTROLLER_MANAGER, KWOK, SCHEDULER
from kokpit.local.process import ProcessRef

LOG_TAIL_LINES = 15


class ClusterError(RuntimeError):
    """The local cluster cannot do what was asked; the message says why."""


class AlreadyRunningError(ClusterError):
    pass


class ComponentFailedError(ClusterError):
    """A component exited or never became healthy."""

    def __init__(self, component: str, what: str, log: Path) -> None:
        self.component = component
        self.log = log
        last = process.tail(log, LOG_TAIL_LINES) or "(the log is empty)"
        indented = "\n".join(f"    {line}" for line in last.splitlines())
        super().__init__(f"{component} {what}; its log is {log}, ending with:\n{indented}")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    log: Path


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

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def server(self) -> str | None:
        ports = self._state().get("ports")
        return f"https://127.0.0.1:{ports['apiserver']}" if ports else None

    def up(
        self,
        assets: Assets,
        *,
        settings: Settings | None = None,
        progress: Callable[[str], None] = print,
    ) -> None:
        """Start every component and wait until each is healthy.

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
        ports = self._choose_ports()
        self.layout.pki.ensure()
        self._write_kubeconfigs(ports)
        state: dict[str, Any] = {
            "kubernetes": assets.kubernetes_version,
            "assets": str(assets.root),
            "ports": dataclasses.asdict(ports),
            "processes": {},
        }
        self._save(state)
        try:
            for make in components.ALL:
                component = make(assets, self.layout, ports, settings)
                started = time.monotonic()
                ref = process.spawn(component.argv, self.layout.log(component.name))
                state["processes"][component.name] = {
                    **ref.to_json(),
                    "argv": component.argv,
                    "health": dataclasses.asdict(component.health),
                }
                self._save(state)
                self._wait_healthy(component, ref, settings.start_timeout_s)
                progress(f"  {component.name:<24} ready in {time.monotonic() - started:4.1f} s")
        except BaseException:
            self.down()
            raise

    def down(self, *, wipe: bool = False) -> None:
        """Stop every component (kwok first, etcd last); ``wipe`` also deletes all data."""
        state = self._state()
        for name, ref in reversed(list(state.get("processes", {}).items())):
            process.stop(ProcessRef.from_json(ref), timeout=10.0 if name != "etcd" else 20.0)
        if state:
            state["processes"] = {}
            self._save(state)
        if wipe:
            shutil.rmtree(self.layout.root, ignore_errors=True)

    def restart(self, name: str, *, timeout_s: float = 90.0) -> None:
        """Stop one component and start it again with the same command line (for fault tests
        and for picking up new flags); returns once it is healthy again."""
        state = self._state()
        entry = state.get("processes", {}).get(name)
        if entry is None:
            raise ClusterError(f"no component {name!r} in {self.layout.state}")
        process.stop(ProcessRef.from_json(entry))
        component = Component(name, entry["argv"], Health(**entry["health"]))
        ref = process.spawn(component.argv, self.layout.log(name))
        state["processes"][name] = {**entry, **ref.to_json()}
        self._save(state)
        self._wait_healthy(component, ref, timeout_s)

    def status(self) -> ClusterStatus:
        state = self._state()
        statuses = []
        for name, ref_json in state.get("processes", {}).items():
            ref = ProcessRef.from_json(ref_json)
            running = process.alive(ref)
            ok = running and healthy(Health(**ref_json["health"]), self.layout)
            statuses.append(ComponentStatus(name, ref.pid, running, ok, self.layout.log(name)))
        return ClusterStatus(
            data_dir=self.layout.root,
            kubernetes_version=state.get("kubernetes"),
            server=self.server,
            kubeconfig=self.kubeconfig,
            components=statuses,
        )

    def _wait_healthy(self, component: Component, ref: ProcessRef, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not process.alive(ref):
                raise ComponentFailedError(
                    component.name, "exited during start", self.layout.log(component.name)
                )
            if healthy(component.health, self.layout):
                return
            time.sleep(0.2)
        raise ComponentFailedError(
            component.name,
            f"did not become healthy within {timeout_s:.0f} s ({component.health.url})",
            self.layout.log(component.name),
        )

    def _choose_ports(self) -> Ports:
        """Reuse the ports of the last run where they are still free; pick free ones otherwise."""
        previous: dict[str, int] = self._state().get("ports", {})
        taken: set[int] = set()
        chosen: dict[str, int] = {}
        for field in dataclasses.fields(Ports):
            port = previous.get(field.name)
            if port is None or port in taken or not _port_free(port):
                port = _free_port(taken)
            taken.add(port)
            chosen[field.name] = port
        return Ports(**chosen)

    def _write_kubeconfigs(self, ports: Ports) -> None:
        server = f"https://127.0.0.1:{ports.apiserver}"
        pki = self.layout.pki
        kubeconfig.write(self.kubeconfig, server=server, pki=pki, who=ADMIN, cluster_name=self.name)
        for who in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            path = self.layout.component_kubeconfig(who.file)
            path.parent.mkdir(exist_ok=True)
            kubeconfig.write(path, server=server, pki=pki, who=who, cluster_name=self.name)

    def _state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.layout.state.read_text())
        except FileNotFoundError:
            return {}
        return data

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.layout.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.rename(self.layout.state)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in taken:
            return port
