"""MachinePackageVersion: one tested set of host packages, applied to Machines in order.

Cluster-scoped and immutable once created, like ClusterPackageVersion. Every package installs
through idempotent steps: ``check`` says what is installed now, ``install``/``upgrade``/``remove``
change it, ``verify`` says the change worked. Script steps are the base; the ``apt`` and
``binary`` helpers are thin layers that the Machine-Operator expands into script steps.

Every value here may reach a host's shell. The operator passes values to scripts only as quoted
environment variables, never as script text; the shapes below are refused by the API server first,
with a message, so a bad value is a clear error at ``kubectl apply`` rather than a strange host.
The Machine-Operator checks the same shapes again (``kokpit.providers.machine.packages``), for
objects stored before a rule existed and for the config keys, which no CEL rule can afford: the
patterns are written once, here, for both RE2 (CEL) and Python's :func:`re.fullmatch` (plain
classes, no ``\\s``, no anchors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kokpit.api.schema import Kind, PrinterColumn, Rule, field

PackageKind = Literal["SystemConfig", "KernelPatch", "ContainerRuntime", "Kubelet", "Other"]

#: A package's name: it names the package's lock file and systemd unit on the host.
PACKAGE_NAME = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
#: A version: printable ASCII without spaces. A check step's output is compared with it after
#: trimming whitespace, so a version with a space or newline could never match (endless upgrades).
VERSION = r"[!-~]+"
#: A configuration key. ``KOKPIT_CONFIG_`` + the key upper-cased with ``.`` and ``-`` turned into
#: ``_`` is its environment variable, so keys that differ only there are refused too.
CONFIG_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
#: A Debian package name (Debian policy 5.6.1); never a leading ``-`` (an apt-get option).
DEBIAN_PACKAGE = r"[a-z0-9][a-z0-9+.-]+"
#: A Debian version: [epoch:]upstream[-revision], loosely.
DEBIAN_VERSION = r"[A-Za-z0-9][A-Za-z0-9.+~:-]*"
#: An http(s) URL: RFC 3986 characters only (no spaces, quotes, backslashes or braces).
URL = r"https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+"
#: An absolute file path: segments of common file-name characters, none empty, ``.`` or ``..``,
#: no trailing ``/``.
HOST_PATH = r"(/[.]*[A-Za-z0-9_+@,:=~-][A-Za-z0-9._+@,:=~-]*)+"


def _matches(pattern: str, message: str) -> Rule:
    """A CEL rule that the whole string matches ``pattern`` (a raw CEL string: the patterns
    hold no quotes, and their backslashes are RE2's)."""
    return Rule(f"self.matches(r'^({pattern})$')", message)


@dataclass(kw_only=True)
class ScriptStep:
    """A shell script run on the host (``/bin/sh -eu``); it must be safe to run twice."""

    run: str = field("The script.", min_length=1, max_length=65536)
    timeout_seconds: int = field(
        "How long it may run before it is killed and failed.", default=300, minimum=1, maximum=7200
    )


@dataclass(kw_only=True)
class ScriptSteps:
    """The steps of a package installed by scripts."""

    check: ScriptStep = field(
        "Prints the installed version on stdout (nothing if not installed); exit 0 either way."
    )
    install: ScriptStep = field("Installs the package at this version.")
    upgrade: ScriptStep | None = field(
        "Moves an installed older version to this one; install is used when omitted.",
        default=None,
    )
    remove: ScriptStep | None = field("Removes the package.", default=None)
    verify: ScriptStep | None = field("Exits 0 only if the installed package works.", default=None)


@dataclass(kw_only=True)
class AptInstall:
    """Install a Debian package with apt-get."""

    package: str = field(
        "The Debian package name.",
        min_length=1,
        max_length=128,
        rules=(
            _matches(
                DEBIAN_PACKAGE,
                "must be a Debian package name: lower-case letters, digits, '+', '-' and '.', "
                "starting with a letter or digit",
            ),
        ),
    )
    version: str = field(
        "The exact Debian version to install; empty means the package's version. The check "
        "step reports the installed Debian version, so it must equal the package's version.",
        default="",
        max_length=128,
        rules=(
            Rule(
                f"self == '' || self.matches(r'^({DEBIAN_VERSION})$')",
                "must be a Debian version: letters, digits, '.', '+', '~', ':' and '-', "
                "starting with a letter or digit",
            ),
        ),
    )


@dataclass(kw_only=True)
class BinaryInstall:
    """Install a binary file (and optionally a systemd unit that runs it)."""

    url: str = field(
        "Where to fetch the binary from (http or https).",
        min_length=1,
        max_length=2048,
        rules=(
            _matches(
                URL,
                "must be an http:// or https:// URL without spaces, quotes, backslashes or "
                "braces (percent-encode them)",
            ),
        ),
    )
    sha256: str = field(
        "Its SHA-256; a download that does not match is refused.", pattern=r"^[a-f0-9]{64}$"
    )
    path: str = field(
        "Where to put it on the host: an absolute file path.",
        min_length=2,
        max_length=1024,
        rules=(
            _matches(
                HOST_PATH,
                "must be an absolute file path: '/'-separated names of letters, digits and "
                "'._+@,:=~-', none of them '.' or '..', no trailing '/'",
            ),
        ),
    )
    systemd_unit: str = field(
        "A systemd unit file to install (as <package name>.service) and start with it.",
        default="",
        max_length=65536,
        rules=(Rule("!self.contains('\\u0000')", "must not contain NUL characters"),),
    )


@dataclass(kw_only=True)
class InstallMethod:
    """How the package is installed: exactly one of script, apt or binary."""

    script: ScriptSteps | None = field("Script steps.", default=None)
    apt: AptInstall | None = field("An apt package.", default=None)
    binary: BinaryInstall | None = field("A binary and systemd unit.", default=None)
    __rules__ = (
        Rule(
            "[has(self.script), has(self.apt), has(self.binary)].filter(x, x).size() == 1",
            "set exactly one of install.script (with at least check and install steps), "
            "install.apt or install.binary",
        ),
    )


@dataclass(kw_only=True)
class Package:
    """One package on the host."""

    name: str = field(
        "Unique within the package version, e.g. containerd.",
        min_length=1,
        max_length=63,
        pattern=f"^{PACKAGE_NAME}$",
    )
    kind: PackageKind = field("What the package is; Kubelet is the one that joins the node.")
    version: str = field(
        "The version check must report once installed.",
        min_length=1,
        max_length=128,
        rules=(
            _matches(
                VERSION,
                "must be printable ASCII without spaces or newlines (the check step's output "
                "is compared with it, trimmed)",
            ),
        ),
    )
    # No CEL rule on the keys: the API server cannot bound a map key's length, so any rule
    # over them exceeds the cost budget. The Machine-Operator checks them (InvalidPackage).
    config: dict[str, str] = field(
        "Settings passed to the steps as environment variables KOKPIT_CONFIG_<KEY>: the key "
        "upper-cased, '.' and '-' turned into '_'. Keys are letters, digits, '.', '-' and '_', "
        "and must stay distinct as variables (a-b, A.B and a_b collide); the Machine-Operator "
        "refuses others with the condition PackagesInstalled=False, reason InvalidPackage.",
        default_factory=dict,
        max_properties=64,
    )
    install: InstallMethod = field("How to install, upgrade, remove and verify it.")


@dataclass(kw_only=True)
class MachinePackageVersionSpec:
    """The packages a Machine runs, applied in order (and removed in reverse)."""

    packages: list[Package] = field(
        "The packages, in install order. Names are unique.",
        min_items=1,
        max_items=64,
        list_type="map",
        list_map_keys=("name",),
        rules=(
            Rule(
                "self.filter(p, p.kind == 'Kubelet').size() <= 1",
                "at most one package may be the Kubelet",
            ),
        ),
    )


MACHINE_PACKAGE_VERSION = Kind(
    group="kokpit.io",
    version="v1alpha1",
    kind="MachinePackageVersion",
    plural="machinepackageversions",
    spec=MachinePackageVersionSpec,
    status=None,
    scope="Cluster",
    short_names=("mpv",),
    description=(
        "MachinePackageVersion is one tested set of host packages (system configuration, "
        "kernel patches, container runtime, kubelet). It is immutable: to change anything, "
        "create a new one and point Machines at it."
    ),
    printer_columns=(PrinterColumn("Packages", ".spec.packages[*].name"),),
    rules=(
        Rule(
            "self.spec == oldSelf.spec",
            "a MachinePackageVersion's spec is immutable; create a new MachinePackageVersion "
            "and point the Machines at it",
            field_path=".spec",
        ),
    ),
)
