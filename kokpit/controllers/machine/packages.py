"""Packages as steps: the install methods expanded to scripts, and the next change to make.

Everything here is pure. Script steps are the base; ``apt`` and ``binary`` are thin layers that
expand into the same five scripts (check, install, upgrade, remove, verify), so the operator has
one way to run a package whatever its method.

File paths in the helpers' scripts are under ``$KOKPIT_ROOT``: empty on a real host, a
directory on the simulated hosts the tests start (see :mod:`kokpit.providers.machine.ssh`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kokpit.providers.machine import Action, Step

Object = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One change to make on the host: ``action`` with the steps of ``package``."""

    package: Object
    action: Action

    @property
    def name(self) -> str:
        return str(self.package["name"])


def next_change(
    desired: Sequence[Object], installed: Mapping[str, str], retired: Sequence[Object]
) -> Change | None:
    """The first change that brings the host to ``desired``, or None when it is there.

    ``installed`` is what the check steps reported (absent or empty: not installed).
    ``retired`` are the packages of the last applied version that ``desired`` dropped: they
    are removed first, the last installed first, with their own (old) remove steps.
    """
    for package in reversed(retired):
        if installed.get(package["name"]) and scripts(package).get("remove"):
            return Change(package, "remove")
    for package in desired:
        current = installed.get(package["name"], "")
        if current == package["version"]:
            continue
        return Change(package, "upgrade" if current else "install")
    return None


def reported_version(stdout: str) -> str:
    """The version a check step reports: its last non-blank line, stripped."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def retired(desired: Sequence[Object], applied: Sequence[Object]) -> list[Object]:
    """The packages of ``applied`` (the last applied version) that ``desired`` dropped."""
    names = {p["name"] for p in desired}
    return [p for p in applied if p["name"] not in names]


def step(package: Object, action: Action, *, node_name: str) -> Step | None:
    """The ``action`` step of ``package`` (None when the package has no such step)."""
    script = scripts(package).get(action)
    if script is None:
        return None
    return Step(
        package=package["name"],
        action=action,
        version=package["version"],
        script=script["run"],
        env=env(package, node_name),
        timeout_seconds=float(script.get("timeoutSeconds", 300)),
    )


def env(package: Object, node_name: str) -> dict[str, str]:
    """What a step's script sees: the package, its version, the node, and its configuration
    as ``KOKPIT_CONFIG_<KEY>`` (the key upper-cased, other characters turned into ``_``)."""
    out = {
        "KOKPIT_PACKAGE": package["name"],
        "KOKPIT_VERSION": package["version"],
        "KOKPIT_NODE_NAME": node_name,
    }
    for key, value in (package.get("config") or {}).items():
        out["KOKPIT_CONFIG_" + re.sub(r"[^A-Z0-9]", "_", key.upper())] = value
    return out


def scripts(package: Object) -> dict[str, Object]:
    """The package's steps by action, each ``{"run": ..., "timeoutSeconds": ...}``; upgrade
    falls back to install."""
    method = package["install"]
    if "script" in method:
        steps = {k: v for k, v in method["script"].items() if v}
    elif "apt" in method:
        steps = _apt(method["apt"], package["version"])
    else:
        steps = _binary(method["binary"], package)
    steps.setdefault("upgrade", steps["install"])
    return steps


def _apt(apt: Object, version: str) -> dict[str, Object]:
    name = shlex.quote(apt["package"])
    pinned = shlex.quote(f"{apt['package']}={apt.get('version') or version}")
    apt_get = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confold"
    query = f"dpkg-query -W -f='${{db:Status-Abbrev}} ${{Version}}\\n' {name} 2>/dev/null"
    return {
        "check": _run(f"{query} | awk '$1 == \"ii\" {{ print $2 }}' || true"),
        "install": _run(f"{apt_get} --allow-downgrades install {pinned}", timeout=1800),
        "remove": _run(f"{apt_get} remove {name}", timeout=1800),
        "verify": _run(f"{query} | grep -q '^ii '"),
    }


def _binary(binary: Object, package: Object) -> dict[str, Object]:
    path = f'"$KOKPIT_ROOT"{shlex.quote(binary["path"])}'
    sha, url = binary["sha256"], shlex.quote(binary["url"])
    matches = f'[ -f {path} ] && echo "{sha}  $KOKPIT_ROOT{binary["path"]}" | sha256sum -c --status'
    unit = binary.get("systemdUnit") or ""
    unit_name = shlex.quote(f"{package['name']}.service")
    unit_path = f'"$KOKPIT_ROOT"/etc/systemd/system/{unit_name}'
    # systemd is driven on a real root only; a simulated host just gets the files.
    systemd = '[ -z "$KOKPIT_ROOT" ] && command -v systemctl >/dev/null'
    install = [
        f"mkdir -p $(dirname {path})",
        f"tmp=$(mktemp {path}.XXXXXX); trap 'rm -f \"$tmp\"' EXIT",
        f'curl -fsSL --retry 3 -o "$tmp" {url}',
        f'echo "{sha}  $tmp" | sha256sum -c --status || '
        f'{{ echo "sha256 of {binary["url"]} is not {sha}" >&2; exit 1; }}',
        f'chmod 0755 "$tmp" && mv "$tmp" {path}',
    ]
    remove = []
    if unit:
        install += [
            f"mkdir -p \"$KOKPIT_ROOT\"/etc/systemd/system && cat > {unit_path} <<'KOKPIT_UNIT'",
            unit.rstrip("\n"),
            "KOKPIT_UNIT",
            f"if {systemd}; then systemctl daemon-reload && systemctl enable --now {unit_name}; fi",
        ]
        remove += [
            f"if {systemd}; then systemctl disable --now {unit_name} || true; fi",
            f"rm -f {unit_path}",
        ]
    remove.append(f"rm -f {path}")
    return {
        "check": _run(f"if {matches}; then echo {shlex.quote(package['version'])}; fi"),
        "install": _run("\n".join(install), timeout=900),
        "remove": _run("\n".join(remove)),
        "verify": _run(matches),
    }


def _run(script: str, timeout: int = 300) -> Object:
    return {"run": script, "timeoutSeconds": timeout}
