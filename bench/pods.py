"""Resident memory and CPU of pods on a real node, read from ``/proc`` of their processes.

Why ``/proc`` and not the kubelet's ``/metrics/resource`` or the cgroups' memory counters: the
operator's own figures are its process's ``VmRSS`` and CPU ticks, so reading the control
planes the same way puts both in one unit. The kubelet reports a *working set* (cgroup usage
minus inactive files), which on this cgroup v1 host also counts page cache and the
memory-backed ``emptyDir`` each component mounts: a different quantity from what Kamaji or
anyone quotes as an operator's memory. A container's processes are found by their cgroup,
whose path names the pod (``.../pod<uid>/<container>``; cgroupfs writes the uid with ``-``,
systemd with ``_``); the sandbox's ``pause`` is told apart by its name and reported on its
own, as are the containerd shims (one per pod, outside the pod's cgroup, told apart by the
address of their node's containerd): costs of running any pod on the node, not of the control
plane.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
POD_UID = re.compile(r"pod([0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12})")
#: ``comm`` of containerd's runc shim, as the kernel truncates it (15 characters).
SHIM = "containerd-shim"


@dataclass
class Sample:
    """One reading of every pod's processes: per pod uid, the RSS (MiB) and CPU seconds of
    its containers' processes; the same of the sandboxes (``pause``) and of the shims."""

    rss_mib: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    pause_rss_mib: dict[str, float] = field(default_factory=dict)
    shim_rss_mib: list[float] = field(default_factory=list)


def read(pid: str) -> tuple[float, float]:
    """RSS (MiB) and CPU seconds (user and system, all threads) of the process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024, cpu
    return 0.0, cpu  # a zombie has no VmRSS


def sample(containerd_socket: Path) -> Sample:
    """Every process on this host that runs in a pod's cgroup, summed per pod, and the shims
    of the containerd listening on ``containerd_socket``."""
    out = Sample()
    address = str(containerd_socket).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):  # a process that ended
            comm = (proc / "comm").read_text().strip()
            if comm == SHIM:
                if address in (proc / "cmdline").read_bytes().split(b"\0"):
                    out.shim_rss_mib.append(read(proc.name)[0])
                continue
            found = POD_UID.search((proc / "cgroup").read_text())
            if not found:
                continue
            rss, cpu = read(proc.name)
            uid = found.group(1).replace("_", "-")
            if comm == "pause":
                out.pause_rss_mib[uid] = out.pause_rss_mib.get(uid, 0.0) + rss
                continue
            out.rss_mib[uid] = out.rss_mib.get(uid, 0.0) + rss
            out.cpu_seconds[uid] = out.cpu_seconds.get(uid, 0.0) + cpu
    return out
