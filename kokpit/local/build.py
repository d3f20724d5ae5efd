"""Build the local meta-cluster's binaries from Go modules.

``k8s.io/kubernetes`` is a Go module, but its ``go.mod`` requires each staging module
(``k8s.io/api``, ``k8s.io/apiserver``, ...) at ``v0.0.0`` and replaces it with a local
``./staging/...`` path, and replaces are ignored when a module is used as a dependency. So the
build writes a small wrapper module that replaces every staging module with the ``v0.<minor>.
<patch>`` cut with the release. The list is read from the release's own ``go.mod``, never
hard-coded, because it changes between releases. etcd is built at the version that same
``go.mod`` requires (the one kube-apiserver was tested with); kwok is installed at
:data:`~kokpit.local.versions.KWOK_VERSION`. A real node's binaries come along: the kubelet
and kube-proxy from the same wrapper module, CoreDNS at :data:`COREDNS_VERSION`, and a
``pause`` of a few lines (:data:`PAUSE_SOURCE`) for the pod sandbox, so no image registry is
needed.

Output goes to a private directory that is renamed into place only after the manifest is
written (see :mod:`kokpit.local.assets`), so a killed build leaves nothing half-usable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

from kokpit.local.assets import (
    BINARIES,
    KWOK_STAGES,
    Assets,
    AssetsError,
    CorruptAssetsError,
    Progress,
    binary_version,
    cache_root,
    exclusive,
    find,
    missing,
    read_manifest,
    release_dir,
    write_manifest,
)
from kokpit.local.versions import KWOK_VERSION, Release

KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
KWOK_MODULE = "sigs.k8s.io/kwok"
#: CoreDNS for the meta-cluster's DNS on real nodes; pinned so a build is reproducible.
COREDNS_MODULE = "github.com/coredns/coredns"
COREDNS_VERSION = "v1.14.7"
#: kwok stage sets (directories under ``kustomize/stage`` of the kwok module): nodes that
#: initialise at once and heartbeat through Leases, pods that become ready at once, and the
#: label-triggered ``node-not-ready`` chaos stage for fault injection.
KWOK_STAGE_SETS = ("node/fast", "node/heartbeat-with-lease", "pod/fast")
KWOK_EXTRA_STAGES = ("node/chaos/node-not-ready.yaml",)
#: How often the compile step reports progress.
PROGRESS_EVERY_S = 15.0


class BuildError(AssetsError):
    """A build step failed; the message carries the tail of its output."""


def build(
    release: Release, dest: Path, progress: Progress, *, only: Collection[str] | None = None
) -> None:
    """Build every binary for ``release`` and move the result to ``dest`` atomically.

    With ``only`` (names from :data:`~kokpit.local.assets.BINARIES`), complete the sound build
    in ``dest`` instead: build just those, move each into ``dest`` and then rewrite its
    manifest (readers see the old manifest, which does not list them, or the new one).
    """
    go = require_go()
    started = time.monotonic()
    wanted = set(BINARIES if only is None else only)
    work = cache_root() / "build" / release.version
    out = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    steps: dict[str, float] = {}

    def step(name: str) -> None:
        steps[name] = round(time.monotonic() - started - sum(steps.values()), 1)

    cold = _go_cache_is_empty(go, env)
    what = "" if only is None else f" (completing the cache with {', '.join(sorted(wanted))})"
    progress(
        f"building Kubernetes {release.version} with {go} into {dest}{what}"
        f"{' (empty Go build cache: a cold build)' if cold else ''}"
    )
    progress("[1/6] reading k8s.io/kubernetes go.mod from the module proxy")
    gomod = Path(go_download(go, f"k8s.io/kubernetes@{release.version}", env, work)["GoMod"])
    staging, etcd_version = parse_kubernetes_gomod(gomod.read_text())

    progress(f"[2/6] wrapper module: {len(staging)} staging modules → {release.staging_version}")
    (work / "go.mod").write_text(f"module kokpit.local/k8s-{release.version}\n\ngo 1.26\n")
    (work / "go.sum").unlink(missing_ok=True)
    replaces = [f"-replace={m}={m}@{release.staging_version}" for m in staging]
    _run([go, "mod", "edit", *replaces], work, env)
    commands = [c for c in KUBERNETES_COMMANDS if c in wanted]
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
    _run(
        [go, "get", *(f"{p}@{release.version}" for p in packages), f"{ETCD_MODULE}@{etcd_version}"],
        work,
        env,
    )
    step("resolve")

    if packages:
        progress(
            f"[3/6] compiling {', '.join(commands)} {release.version} "
            "(a cold build takes 10-20 minutes on 2 cores)"
        )
        ldflags = " ".join(["-s", "-w", *version_ldflags(release)])
        go_build(
            [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", f"{out}/", *packages],
            work,
            env,
            progress,
        )
        step("kubernetes")

    if "etcd" in wanted:
        progress(f"[4/6] compiling etcd {etcd_version}")
        go_build(
            [
                go,
                "build",
                "-v",
                "-trimpath",
                "-ldflags",
                "-s -w",
                "-o",
                str(out / "etcd"),
                ETCD_MODULE,
            ],
            work,
            env,
            progress,
        )
        step("etcd")

    if "kwok" in wanted:
        progress(f"[5/6] compiling kwok {KWOK_VERSION} and collecting its stages")
        kwok_ldflags = f"-s -w -X {KWOK_MODULE}/pkg/consts.Version={KWOK_VERSION}"
        _install(
            go, f"{KWOK_MODULE}/cmd/kwok@{KWOK_VERSION}", kwok_ldflags, out, work, env, progress
        )
        kwok_dir = Path(go_download(go, f"{KWOK_MODULE}@{KWOK_VERSION}", env, work)["Dir"])
        (out / KWOK_STAGES).write_text(collect_kwok_stages(kwok_dir / "kustomize" / "stage"))
        step("kwok")

    if {"pause", "coredns"} & wanted:
        progress(f"[6/6] compiling pause and CoreDNS {COREDNS_VERSION}")
        if "pause" in wanted:
            _build_pause(go, out / "pause", work, env, progress)
        if "coredns" in wanted:
            _install(go, f"{COREDNS_MODULE}@{COREDNS_VERSION}", "-s -w", out, work, env, progress)
        step("node")

    for command in ("kube-apiserver", "kubelet"):
        if command in wanted:
            reported = binary_version(out / command)
            if reported != release.version:
                raise BuildError(f"{command} reports {reported}, expected {release.version}")
    info: dict[str, object] = {
        "kubernetes": release.version,
        "etcd": etcd_version,
        "kwok": KWOK_VERSION,
        "coredns": COREDNS_VERSION,
        "go": go_version(go),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - started, 1),
        "go_build_cache": "cold" if cold else "warm",
        "step_seconds": steps,
    }
    if only is None:
        write_manifest(out, info)
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
    else:
        _complete(dest, out, info)
    progress(f"built Kubernetes {release.version} in {info['build_seconds']} s: {dest}")


def _complete(dest: Path, out: Path, info: dict[str, object]) -> None:
    """Move the files built into ``out`` into the sound build ``dest``, then record them in
    its manifest (the old build's facts kept, this completion's added under ``completed``)."""
    previous = {k: v for k, v in read_manifest(dest).items() if k != "files"}
    for path in sorted(out.iterdir()):
        path.rename(dest / path.name)
    out.rmdir()
    write_manifest(dest, {**previous, "coredns": COREDNS_VERSION, "completed": info})


#: The pod sandbox's process: it only holds the pod's namespaces, so it sleeps until told to
#: stop. Built static (CGO off) so its image needs no libc.
PAUSE_SOURCE = """\
// pause holds a pod's namespaces for the kubelet's sandbox; built by kokpit.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tstop := make(chan os.Signal, 1)
\tsignal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
\tgo func() {
\t\t// As PID 1 of the pod, reap the zombies of processes that exit in it.
\t\tchild := make(chan os.Signal, 1)
\t\tsignal.Notify(child, syscall.SIGCHLD)
\t\tfor range child {
\t\t\tfor {
\t\t\t\tpid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
\t\t\t\tif pid <= 0 || err != nil {
\t\t\t\t\tbreak
\t\t\t\t}
\t\t\t}
\t\t}
\t}()
\t<-stop
}
"""


def _build_pause(go: str, dest: Path, work: Path, env: dict[str, str], progress: Progress) -> None:
    source = work / "pause"
    source.mkdir(parents=True, exist_ok=True)
    (source / "go.mod").write_text("module kokpit.local/pause\n\ngo 1.26\n")
    (source / "main.go").write_text(PAUSE_SOURCE)
    go_build(
        [go, "build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(dest), "."],
        source,
        env,
        progress,
    )


def _install(
    go: str,
    module: str,
    ldflags: str,
    out: Path,
    work: Path,
    env: dict[str, str],
    progress: Progress,
) -> None:
    """``go install module@version`` into ``out`` (for modules without replace directives)."""
    go_build(
        [go, "install", "-v", "-trimpath", "-ldflags", ldflags, module],
        work,
        {**env, "GOBIN": str(out)},
        progress,
    )


def parse_kubernetes_gomod(text: str) -> tuple[list[str], str]:
    """The staging modules ``k8s.io/kubernetes`` replaces locally, and its etcd server version."""
    staging = re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/", text, re.MULTILINE)
    etcd = re.search(rf"^\s*{re.escape(ETCD_MODULE)}\s+(v\S+)", text, re.MULTILINE)
    if not staging or etcd is None:
        raise BuildError("k8s.io/kubernetes go.mod has no staging replaces or no etcd server")
    return staging, etcd.group(1)


def version_ldflags(release: Release) -> list[str]:
    """``-X`` flags that make ``--version`` print the release instead of ``v0.0.0-master``."""
    values = {
        "gitVersion": release.version,
        "gitMajor": "1",
        "gitMinor": str(release.minor),
        "gitTreeState": "clean",
    }
    return [
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in values.items()
    ]


def collect_kwok_stages(stage_root: Path) -> str:
    """Concatenate the stage files of :data:`KWOK_STAGE_SETS` into one YAML stream."""
    files: list[Path] = []
    for stage_set in KWOK_STAGE_SETS:
        kustomization = (stage_root / stage_set / "kustomization.yaml").read_text()
        files += [
            stage_root / stage_set / f
            for f in re.findall(r"^-\s+(\S+\.yaml)", kustomization, re.MULTILINE)
        ]
    files += [stage_root / f for f in KWOK_EXTRA_STAGES]
    return "".join(
        f"---\n# from kwok {KWOK_VERSION} {f.relative_to(stage_root)}\n{f.read_text()}"
        for f in files
    )


def go_version(go: str) -> str:
    return subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _go_cache_is_empty(go: str, env: dict[str, str]) -> bool:
    out = subprocess.run([go, "env", "GOCACHE"], env=env, capture_output=True, text=True)
    cache = Path(out.stdout.strip())
    return not cache.is_dir() or not any(cache.iterdir())


def require_go(what: str = "building Kubernetes") -> str:
    """The ``go`` on PATH, if it is recent enough for ``what`` (said in the error)."""
    go = shutil.which("go")
    if go is None:
        raise AssetsError(
            f"{what} needs the Go toolchain (go >= 1.26, with access to the Go "
            "module proxy) on PATH; or set KOKPIT_ASSETS=<dir> to prebuilt binaries "
            "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, kubectl)"
        )
    version = go_version(go)
    found = re.match(r"go(\d+)\.(\d+)", version)
    if found is None or (int(found.group(1)), int(found.group(2))) < (1, 26):
        raise AssetsError(f"{go} is {version}; {what} needs go >= 1.26 (or set KOKPIT_ASSETS)")
    return go


def go_download(go: str, module: str, env: dict[str, str], work: Path) -> dict[str, str]:
    out = _run([go, "mod", "download", "-json", module], work, env)
    data: dict[str, str] = json.loads(out)
    if "Error" in data:
        raise BuildError(f"go mod download {module}: {data['Error']}")
    return data


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-30:])
        raise BuildError(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def go_build(cmd: list[str], cwd: Path, env: dict[str, str], progress: Progress) -> None:
    """Run a ``go build -v``, reporting how many packages it compiled every few seconds."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if proc.stdout is None:
        raise RuntimeError("go build has no output pipe")
    lines: list[str] = []
    last_report = time.monotonic()
    for line in proc.stdout:
        lines.append(line.rstrip())
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            progress(f"      {len(lines)} packages compiled (now {lines[-1]})")
            last_report = time.monotonic()
    if proc.wait() != 0:
        tail = "\n".join(lines[-30:])
        raise BuildError(f"{' '.join(cmd[:2])} failed (exit {proc.returncode}):\n{tail}")


def ensure(release: Release, progress: Progress = print) -> Assets:
    """Find the assets for ``release``, building them first when needed."""
    found = find(release)
    if found is not None:
        return found
    # One build per release at a time across processes.
    with exclusive(cache_root() / "bin" / f".{release.version}.lock"):
        found = find(release)  # another process may have built it while we waited
        if found is not None:
            return found
        lacking = missing(release)
        build(release, release_dir(release), progress, only=lacking or None)
    found = find(release)
    if found is None:
        raise CorruptAssetsError(f"the build of {release.version} did not verify")
    return found
