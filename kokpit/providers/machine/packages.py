"""Packages as steps: the install methods expanded to scripts, and the next change to make.

Everything here is pure. Script steps are the base; ``apt`` and ``binary`` are thin layers that
expand into the same five scripts (check, install, upgrade, remove, verify), so the operator has
one way to run a package whatever its method.

File paths in the helpers' scripts are under ``$KOKPIT_ROOT``: empty on a real host, a
directory on the simulated hosts the tests start (see :mod:`kokpit.providers.machine.ssh`).

A resource's values never become script text. The helpers' scripts are constants; the values
they act on (the Debian package and version, the URL, path and systemd unit of a binary, the
configuration) reach them as environment variables, which the executor exports quoted. The
scripts quote every expansion (``"$KOKPIT_BINARY_PATH"``) and end options with ``--`` before
a value, so a value is always one argument and never an option. The API server refuses values
of the wrong shape first; :func:`problems` checks the same shapes again (for objects stored
before a rule existed), and the scripts stay safe even without either.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kokpit.api.v1alpha1 import machinepackageversion as api
from kokpit.providers.machine import Action, Step

Object = dict[str, Any]

#: Set to ``true`` in the environment of an install step that re-provisions a package the
#: host has (the Machine annotation ``kokpit.io/reprovision``), and unset otherwise (steps run
#: under ``set -u``: read it as ``${KOKPIT_REPROVISION:-}``). A script package may reinstall
#: harder then (overwrite its files, reset its state); apt packages are reinstalled.
REPROVISION_ENV = "KOKPIT_REPROVISION"


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
        # Both sides are trimmed: a version with surrounding space is refused (problems), and a
        # check that prints "1.0\n" or "1.0 " reports 1.0 (reported_version).
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


def step(
    package: Object, action: Action, *, node_name: str, extra_env: Mapping[str, str] | None = None
) -> Step | None:
    """The ``action`` step of ``package`` (None when the package has no such step), its
    environment with ``extra_env`` (what the operator tells it beyond the package's own)."""
    script = scripts(package).get(action)
    if script is None:
        return None
    return Step(
        package=package["name"],
        action=action,
        version=package["version"],
        script=script["run"],
        env={**env(package, node_name), **(extra_env or {})},
        timeout_seconds=float(script.get("timeoutSeconds", 300)),
    )


def env(package: Object, node_name: str) -> dict[str, str]:
    """What a step's script sees: the package, its version, the node, the values of its apt or
    binary helper (``KOKPIT_APT_*``, ``KOKPIT_BINARY_*``), and its configuration as
    ``KOKPIT_CONFIG_<KEY>`` (see :func:`config_env_name`)."""
    out = {
        "KOKPIT_PACKAGE": package["name"],
        "KOKPIT_VERSION": package["version"],
        "KOKPIT_NODE_NAME": node_name,
    }
    method = package["install"]
    if "apt" in method:
        apt = method["apt"]
        out["KOKPIT_APT_PACKAGE"] = apt["package"]
        out["KOKPIT_APT_VERSION"] = apt.get("version") or package["version"]
    elif "binary" in method:
        binary = method["binary"]
        out["KOKPIT_BINARY_URL"] = binary["url"]
        out["KOKPIT_BINARY_SHA256"] = binary["sha256"]
        out["KOKPIT_BINARY_PATH"] = binary["path"]
        out["KOKPIT_BINARY_UNIT"] = (binary.get("systemdUnit") or "").rstrip("\n")
    for key, value in (package.get("config") or {}).items():
        out[config_env_name(key)] = value
    return out


def config_env_name(key: str) -> str:
    """``KOKPIT_CONFIG_`` + the key upper-cased, every other character turned into ``_``
    (``sandbox-image`` → ``KOKPIT_CONFIG_SANDBOX_IMAGE``). Keys that differ only there would
    collide: :func:`problems` refuses them, as the API server does."""
    return "KOKPIT_CONFIG_" + re.sub(r"[^A-Z0-9]", "_", key.upper())


def problems(package: Object) -> list[str]:
    """Why ``package``'s values cannot be handed to a host, for a person (empty: they can).

    The API server refuses all of these (see :mod:`kokpit.api.v1alpha1.machinepackageversion`,
    whose patterns are used here); the operator checks again because an object stored before a
    rule existed is never validated again. A bad version would otherwise loop for ever: the
    check's trimmed output can never equal a version with a trailing newline."""
    name = str(package.get("name", ""))
    found: list[str] = []

    def shape(what: str, value: Any, pattern: str, expected: str) -> None:
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            found.append(f"{what} {value!r} {expected}")

    shape("name", name, api.PACKAGE_NAME, "is not a package name ([a-z0-9.-])")
    shape("version", package.get("version"), api.VERSION, "must be printable ASCII without spaces")
    config: Mapping[str, Any] = package.get("config") or {}
    by_env: dict[str, list[str]] = {}
    for key, value in config.items():
        shape("config key", key, api.CONFIG_KEY, "must be letters, digits, '.', '-' and '_'")
        by_env.setdefault(config_env_name(key), []).append(key)
        if not isinstance(value, str) or "\0" in value:
            found.append(f"config {key!r} must be a string without NUL characters")
    for variable, keys in by_env.items():
        if len(keys) > 1:
            listed = ", ".join(repr(k) for k in sorted(keys))
            found.append(f"config keys {listed} would all be the environment variable {variable}")
    method = package.get("install") or {}
    if apt := method.get("apt"):
        shape("apt.package", apt.get("package"), api.DEBIAN_PACKAGE, "is not a Debian package")
        if apt.get("version"):
            shape("apt.version", apt["version"], api.DEBIAN_VERSION, "is not a Debian version")
    if binary := method.get("binary"):
        shape("binary.url", binary.get("url"), api.URL, "is not an http(s) URL")
        shape("binary.path", binary.get("path"), api.HOST_PATH, "is not an absolute file path")
        shape("binary.sha256", binary.get("sha256"), "[a-f0-9]{64}", "is not a SHA-256")
        if "\0" in str(binary.get("systemdUnit") or ""):
            found.append("binary.systemdUnit must not contain NUL characters")
    return [f"package {name!r}: {problem}" for problem in found]


def scripts(package: Object) -> dict[str, Object]:
    """The package's steps by action, each ``{"run": ..., "timeoutSeconds": ...}``; upgrade
    falls back to install. ``restart`` is the script's own, or for apt packages and binaries
    with a unit: restart the systemd unit named after the package."""
    method = package["install"]
    if "script" in method:
        steps = {k: v for k, v in method["script"].items() if v}
    elif "apt" in method:
        steps = {**_APT, "restart": _SYSTEMD_RESTART}
    else:
        with_unit = bool(method["binary"].get("systemdUnit"))
        steps = _binary(with_unit=with_unit)
        if with_unit:
            steps["restart"] = _SYSTEMD_RESTART
    steps.setdefault("upgrade", steps["install"])
    return steps


_APT_GET = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Options::=--force-confold"
_DPKG_STATUS = (
    "dpkg-query -W -f='${db:Status-Abbrev} ${Version}\\n' -- \"$KOKPIT_APT_PACKAGE\" 2>/dev/null"
)


def _run(script: str, timeout: int = 300) -> Object:
    return {"run": textwrap.dedent(script).strip(), "timeoutSeconds": timeout}


_APT: dict[str, Object] = {
    "check": _run(f"{_DPKG_STATUS} | awk '$1 == \"ii\" {{ print $2 }}' || true"),
    "install": _run(
        f"{_APT_GET} --allow-downgrades ${{KOKPIT_REPROVISION:+--reinstall}} install -- "
        '"$KOKPIT_APT_PACKAGE=$KOKPIT_APT_VERSION"',
        timeout=1800,
    ),
    "remove": _run(f'{_APT_GET} remove -- "$KOKPIT_APT_PACKAGE"', timeout=1800),
    "verify": _run(f"{_DPKG_STATUS} | grep -q '^ii '"),
}

#: Restart the package's systemd unit (``<package name>.service``, as binary installs name
#: it). A simulated host (a non-empty ``$KOKPIT_ROOT``, see :mod:`kokpit.providers.machine.sshd`)
#: has no systemd of its own: there the restart is recorded in ``var/lib/kokpit/restarts.log``.
_SYSTEMD_RESTART = _run(
    """
    case "$KOKPIT_PACKAGE" in
      "" | .* | -* | */*) echo "kokpit: $KOKPIT_PACKAGE is not a package name" >&2; exit 1 ;;
    esac
    if [ -z "$KOKPIT_ROOT" ]; then
      systemctl restart -- "$KOKPIT_PACKAGE.service"
    else
      mkdir -p -- "$KOKPIT_ROOT/var/lib/kokpit"
      echo "restart $KOKPIT_PACKAGE $(date +%s.%N)" >> "$KOKPIT_ROOT/var/lib/kokpit/restarts.log"
    fi
    """,
    timeout=120,
)

#: Every binary step starts here: where the file goes, refusing a path that would leave
#: ``$KOKPIT_ROOT`` or name a directory, and a package name that is not a file name.
_BINARY_PATHS = """
    case "$KOKPIT_BINARY_PATH/" in
      /*/) ;;
      *) echo "kokpit: binary.path is not absolute: $KOKPIT_BINARY_PATH" >&2; exit 1 ;;
    esac
    case "$KOKPIT_BINARY_PATH/" in
      *//* | */./* | */../*)
        echo "kokpit: binary.path has an empty, '.' or '..' part: $KOKPIT_BINARY_PATH" >&2
        exit 1 ;;
    esac
    case "$KOKPIT_PACKAGE" in
      "" | .* | -* | */*) echo "kokpit: $KOKPIT_PACKAGE is not a package name" >&2; exit 1 ;;
    esac
    dest="$KOKPIT_ROOT$KOKPIT_BINARY_PATH"
    unit="$KOKPIT_ROOT/etc/systemd/system/$KOKPIT_PACKAGE.service"
    installed() {
      [ -f "$1" ] && [ "$(sha256sum < "$1")" = "$KOKPIT_BINARY_SHA256  -" ]
    }
    # systemd is driven on a real root only; a simulated host just gets the files.
    systemd() {
      [ -z "$KOKPIT_ROOT" ] && command -v systemctl >/dev/null
    }
"""

_BINARY_INSTALL = """
    if [ -d "$dest" ]; then echo "kokpit: $dest is a directory" >&2; exit 1; fi
    # Not $(dirname): command substitution drops a name's trailing newlines.
    mkdir -p -- "${dest%/*}/"
    tmp=$(mktemp -- "$dest.XXXXXX")
    trap 'rm -f -- "$tmp"' EXIT
    curl -fsSLg --retry 3 -o "$tmp" --url "$KOKPIT_BINARY_URL"
    if ! installed "$tmp"; then
      printf 'kokpit: the sha256 of %s is not %s\\n' "$KOKPIT_BINARY_URL" \\
        "$KOKPIT_BINARY_SHA256" >&2
      exit 1
    fi
    chmod 0755 -- "$tmp"
    mv -f -- "$tmp" "$dest"
"""

_UNIT_INSTALL = """
    mkdir -p -- "$KOKPIT_ROOT/etc/systemd/system"
    printf '%s\\n' "$KOKPIT_BINARY_UNIT" > "$unit"
    if systemd; then
      systemctl daemon-reload
      systemctl enable --now -- "$KOKPIT_PACKAGE.service"
    fi
"""

_UNIT_REMOVE = """
    if systemd; then systemctl disable --now -- "$KOKPIT_PACKAGE.service" || true; fi
    rm -f -- "$unit"
"""


def _binary(*, with_unit: bool) -> dict[str, Object]:
    def run(*parts: str, timeout: int = 300) -> Object:
        return _run("".join(textwrap.dedent(part) for part in (_BINARY_PATHS, *parts)), timeout)

    return {
        "check": run('if installed "$dest"; then printf \'%s\\n\' "$KOKPIT_VERSION"; fi\n'),
        "install": run(_BINARY_INSTALL, _UNIT_INSTALL if with_unit else "", timeout=900),
        "remove": run(_UNIT_REMOVE if with_unit else "", 'rm -f -- "$dest"\n'),
        "verify": run('installed "$dest"\n'),
    }
