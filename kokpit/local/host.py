"""The machine-wide state a real node changes, recorded before and put back after.

A kubelet, containerd, the CNI plugins and kube-proxy change things that outlive them: sysctls
(the bridge plugin turns on ``ip_forward``, the kubelet sets ``vm.overcommit_memory``,
``kernel.panic`` and friends), iptables and ip6tables chains (``KUBE-*``, ``CNI-*``), mounts
(the kubelet's root dir, container root filesystems, ``/run/netns`` entries), cgroups, a bridge,
and a few directories (``/run/netns``, ``/run/containerd``, ``/var/log/containers``). A real
node records :func:`snapshot` before it starts anything, and ``down`` undoes each change
with the functions here, each one undoing only what was not there before: chains are deleted
one by one (a table is never flushed, other software's rules stay), a directory is removed
only if it was made by us and is empty, and a sysctl is written back only if it differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Sysctls a real node's components change: the bridge plugin (``ip_forward``), kube-proxy
#: (``route_localnet``, off in kokpit's config but recorded anyway), and the kubelet's
#: "kernel tunables" (set at start unless ``protectKernelDefaults``).
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")
#: Chains that kubelet, kube-proxy and the CNI plugins create; only these are ever deleted.
OWN_CHAIN_PREFIXES = ("KUBE-", "CNI-")
#: Directories the components create when missing, removed again when we made them and
#: they are empty (deepest first).
DIRECTORIES = ("/run/netns", "/run/containerd/s", "/run/containerd", "/var/log/containers")
NETNS = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class HostError(RuntimeError):
    """Something a real node changed on the machine could not be undone."""


def snapshot() -> dict[str, Any]:
    """What :func:`restore` compares against: taken before a real node starts."""
    return {
        "sysctls": {name: read_sysctl(name) for name in SYSCTLS if sysctl_path(name).exists()},
        "chains": {
            f"{binary}/{table}": sorted(chains(binary, table))
            for binary in IPTABLES
            if shutil.which(binary)
            for table in TABLES
        },
        "netns": sorted(p.name for p in NETNS.iterdir()) if NETNS.is_dir() else [],
        "directories": [d for d in DIRECTORIES if Path(d).exists()],
    }


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def read_sysctl(name: str) -> str:
    return sysctl_path(name).read_text().strip()


def restore_sysctls(before: dict[str, str]) -> list[str]:
    """Write back each recorded value that changed; returns the names written."""
    changed = []
    for name, value in before.items():
        if read_sysctl(name) != value:
            sysctl_path(name).write_text(value + "\n")
            changed.append(name)
    return changed


def chains(binary: str, table: str) -> set[str]:
    """The chain names of one table (``iptables-save`` lists each as ``:NAME POLICY ...``)."""
    out = subprocess.run(
        [f"{binary}-save", "-t", table], capture_output=True, text=True, check=False
    )
    return {line[1:].split()[0] for line in out.stdout.splitlines() if line.startswith(":")}


def delete_new_chains(before: dict[str, list[str]]) -> list[str]:
    """Delete the kubelet's, kube-proxy's and CNI's chains that were not there ``before``:
    first every rule elsewhere that jumps to one, then their own rules, then the chains.
    One ``*-restore --noflush`` per table, so a table is never flushed. Returns the
    ``binary/table/chain`` names deleted."""
    deleted = []
    for key in before:
        binary, table = key.split("/")
        if not shutil.which(binary):
            continue
        text = subprocess.run(
            [f"{binary}-save", "-t", table], capture_output=True, text=True, check=False
        ).stdout
        current = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
        new = sorted(c for c in current - set(before[key]) if c.startswith(OWN_CHAIN_PREFIXES))
        if not new:
            continue
        script = removal_script(table, text, new)
        proc = subprocess.run(
            [f"{binary}-restore", "--noflush"],
            input=script,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise HostError(f"{binary}-restore could not delete {new}: {proc.stderr.strip()}")
        deleted += [f"{key}/{c}" for c in new]
    return deleted


def removal_script(table: str, saved: str, chains: Sequence[str]) -> str:
    """An ``*-restore --noflush`` script that deletes ``chains`` from ``table`` (given as
    ``*-save`` printed it): the rules of other chains that jump to one of them, then their
    own rules (``-F`` of that chain only), then the chains themselves."""
    doomed = set(chains)
    script = [f"*{table}"]
    for line in saved.splitlines():
        if not line.startswith("-A "):
            continue
        words = line.split()
        if words[1] not in doomed and _target(words) in doomed:
            script.append("-D " + line[3:])
    script += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains] + ["COMMIT", ""]
    return "\n".join(script)


def _target(words: Sequence[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in words[:-1]:
            return words[words.index(flag) + 1]
    return None


def mounts() -> list[str]:
    """Mount points in /proc/mounts order (octal escapes such as ``\\040`` decoded)."""
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        field = line.split()[1]
        points.append(field.encode().decode("unicode_escape"))
    return points


def unmount_under(roots: Iterable[Path], extra: Iterable[str] = ()) -> list[str]:
    """Unmount every mount at or below one of ``roots`` and at each path of ``extra``, the
    most recent first; a busy one is detached lazily. Returns what was unmounted."""
    prefixes = [str(r.resolve()) for r in roots]
    wanted = set(extra)

    def ours(mount: str) -> bool:
        return mount in wanted or any(mount == p or mount.startswith(p + "/") for p in prefixes)

    done: list[str] = []
    for _ in range(5):  # a mount may be stacked on another at the same point
        targets = [m for m in reversed(mounts()) if ours(m)]
        if not targets:
            return done
        for target in targets:
            proc = subprocess.run(["umount", target], capture_output=True, check=False)
            if proc.returncode != 0:
                subprocess.run(["umount", "-l", target], capture_output=True, check=False)
            done.append(target)
    left = [m for m in mounts() if ours(m)]
    if left:
        raise HostError(f"still mounted after unmounting: {left}")
    return done


def remove_netns(names: Iterable[str]) -> list[str]:
    """Remove ``/run/netns`` entries (unmounted first by :func:`unmount_under`)."""
    removed = []
    for name in names:
        path = NETNS / name
        if path.parent == NETNS and path.exists():
            path.unlink()
            removed.append(name)
    return removed


def cgroup_hierarchies() -> list[Path]:
    """The mount points of every cgroup hierarchy (v1 controllers, named ones, and v2)."""
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2"):
            out.append(Path(fields[1]))
    return out


def create_cgroup(name: str) -> None:
    """``/<name>`` in every hierarchy: the kubelet refuses a ``cgroupRoot`` that is missing."""
    for hierarchy in cgroup_hierarchies():
        (hierarchy / name).mkdir(exist_ok=True)


def remove_cgroup(name: str) -> list[str]:
    """Remove ``/<name>`` and every cgroup below it in every hierarchy, deepest first (a
    cgroup is removed with rmdir once it has no processes and no children). A process still
    in one (a container whose shim died first) is killed: it belongs to the node."""
    removed = []
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / name
        if not top.is_dir():
            continue
        below = sorted(
            (Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True
        )
        for directory in below:
            _empty(directory)
            try:
                directory.rmdir()
            except OSError as e:
                raise HostError(f"cannot remove cgroup {directory}: {e}") from e
            removed.append(str(directory))
    return removed


def _empty(cgroup: Path, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        except OSError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def delete_link(name: str) -> bool:
    """Delete a network interface (the CNI bridge); False if there was none."""
    exists = subprocess.run(["ip", "link", "show", name], capture_output=True, check=False)
    if exists.returncode != 0:
        return False
    subprocess.run(["ip", "link", "delete", name], capture_output=True, check=True)
    return True


def link_names() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def remove_log_links(directory: Path, pointing_into: Path) -> None:
    """Remove the kubelet's ``/var/log/containers`` symlinks to our pod logs."""
    if not directory.is_dir():
        return
    inside = str(pointing_into.resolve()) + "/"
    for link in directory.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(inside):
                link.unlink()


def remove_new_directories(existed: Iterable[str]) -> None:
    """rmdir each of :data:`DIRECTORIES` that did not exist before, when empty."""
    kept = set(existed)
    for directory in DIRECTORIES:
        if directory not in kept:
            with contextlib.suppress(OSError):
                Path(directory).rmdir()


def node_ip() -> str:
    """This machine's address for other hosts: the source of the default route, else the
    first global IPv4 address (the API server refuses to proxy to a loopback node IP)."""
    route = subprocess.run(
        ["ip", "-j", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=False
    )
    if route.returncode == 0:
        for entry in json.loads(route.stdout or "[]"):
            if entry.get("prefsrc"):
                return str(entry["prefsrc"])
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True)
    for link in json.loads(out.stdout):
        for addr in link.get("addr_info", []):
            if addr.get("scope") == "global":
                return str(addr["local"])
    raise HostError("this machine has no non-loopback IPv4 address for a real node")


def routed_subnets() -> set[str]:
    """Destinations of the main routing table (a pod subnet must not be one already)."""
    out = subprocess.run(["ip", "-j", "route"], capture_output=True, text=True, check=True)
    return {str(r["dst"]) for r in json.loads(out.stdout)}
