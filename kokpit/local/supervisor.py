"""Components run as detached processes, recorded in a state file any later process can read.

The state file (``state.json`` in a :class:`~kokpit.local.components.Layout`) holds, per
component, the process (pid and kernel start time), its command line and how to probe its
health, plus whatever the owner stores beside them (ports, versions). It is rewritten after
every start and stop, so a command killed half-way leaves a record that the next one can use
to stop or adopt what runs. Used by the local meta-cluster and by the ``process`` control-plane
runtime of business clusters. A component's environment is PATH and a HOME of its own, never
its starter's (see :func:`~kokpit.local.process.minimal_environment`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kokpit.local import process
from kokpit.local.components import Component, Health, Layout
from kokpit.local.health import healthy
from kokpit.local.process import ProcessRef

LOG_TAIL_LINES = 15


class ComponentFailedError(RuntimeError):
    """A component exited or never became healthy; names it, its log, and the log's tail."""

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


class Supervisor:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.layout.state.read_text())
        except FileNotFoundError:
            return {}
        return data

    def update(self, **values: Any) -> None:
        """Store the owner's values (ports, versions, ...) beside the processes."""
        self._save({**self.state(), **values})

    def running(self, name: str) -> bool:
        entry = self.state().get("processes", {}).get(name)
        return entry is not None and process.alive(ProcessRef.from_json(entry))

    def argv(self, name: str) -> list[str] | None:
        entry = self.state().get("processes", {}).get(name)
        return None if entry is None else list(entry["argv"])

    def ensure(self, component: Component) -> bool:
        """Run ``component``: keep the recorded process if it is alive with the same command
        line, else (re)start it. Returns True when it started a process."""
        if self.running(component.name) and self.argv(component.name) == component.argv:
            state = self.state()
            state["processes"][component.name]["health"] = dataclasses.asdict(component.health)
            self._save(state)
            return False
        self.stop(component.name)
        self.start(component)
        return True

    def start(self, component: Component) -> ProcessRef:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        env = process.minimal_environment(home=self.layout.root)
        ref = process.spawn(component.argv, self.layout.log(component.name), env)
        state = self.state()
        state.setdefault("processes", {})[component.name] = {
            **ref.to_json(),
            "argv": component.argv,
            "health": dataclasses.asdict(component.health),
        }
        self._save(state)
        return ref

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        state = self.state()
        entry = state.get("processes", {}).pop(name, None)
        if entry is not None:
            process.stop(ProcessRef.from_json(entry), timeout=timeout)
            self._save(state)

    def stop_all(self) -> None:
        """Stop every component, the last started first."""
        for name in reversed(list(self.state().get("processes", {}))):
            self.stop(name, timeout=20.0 if name == "etcd" else 10.0)

    def restart(self, name: str, *, timeout_s: float = 90.0) -> None:
        entry = self.state().get("processes", {}).get(name)
        if entry is None:
            raise KeyError(f"no component {name!r} in {self.layout.state}")
        component = Component(name, entry["argv"], Health(**entry["health"]))
        self.stop(name)
        self.start(component)
        self.wait_healthy(component, timeout_s)

    def respawn(self, name: str) -> ProcessRef:
        """Stop ``name`` if it runs and start it again as recorded, without waiting for its
        health (a controller that must not block looks at its health later)."""
        entry = self.state().get("processes", {}).get(name)
        if entry is None:
            raise KeyError(f"no component {name!r} in {self.layout.state}")
        component = Component(name, entry["argv"], Health(**entry["health"]))
        self.stop(name)
        return self.start(component)

    def healthy(self, name: str) -> bool:
        entry = self.state().get("processes", {}).get(name)
        return (
            entry is not None
            and process.alive(ProcessRef.from_json(entry))
            and healthy(Health(**entry["health"]), self.layout)
        )

    def wait_healthy(self, component: Component, timeout_s: float) -> None:
        """Block until ``component`` answers its health URL; raise if it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running(component.name):
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

    def statuses(self) -> list[ComponentStatus]:
        out = []
        for name, entry in self.state().get("processes", {}).items():
            ref = ProcessRef.from_json(entry)
            running = process.alive(ref)
            ok = running and healthy(Health(**entry["health"]), self.layout)
            out.append(ComponentStatus(name, ref.pid, running, ok, self.layout.log(name)))
        return out

    def _save(self, state: dict[str, Any]) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        tmp = self.layout.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.rename(self.layout.state)
