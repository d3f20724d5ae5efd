"""kokpit's runtime against kopf (tuned and default) and a bare-client floor.

→ ``bench/results/runtime.json``, plots in ``bench/results/plots/``.

What is measured: each target (see :mod:`bench.runtime_targets`) keeps N Widgets at
``status.observedGeneration == metadata.generation``. "Converged" means exactly that, for every
Widget, as seen by a watch (:class:`~bench.progress.Convergence`); nothing else runs.

For every size, every target runs ``--runs`` times. Run *r* takes the targets in an order
rotated by *r*, so none always goes first on a freshly started cluster. Each measurement gets
a namespace of its own, N Widgets created before the target starts, a settle period, and the
namespace deleted (and gone) before the next one. Per measurement:

- ``converge_s``: from the target's start until every Widget converged;
- ``writes_per_object``: widget writes counted by the API server itself
  (``apiserver_request_total``, verbs POST/PUT/PATCH/APPLY/DELETE), divided by N;
- ``edit_converge_s`` and ``writes_per_edit``: the same after the benchmark edits the spec of
  a share of the Widgets (its own writes are subtracted);
- ``idle_cpu_pct``: CPU the target used while idle after converging, in % of one core;
- ``peak_rss_mib``: the target's VmHWM.

The result keeps every run, and per figure the median with min and max; ratios between
targets are taken within a run and summarized the same way.

    python -m bench.runtime [--sizes 1000,3000,10000] [--runs 3] [--targets ...] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import machine, plot, stats
from bench.interrupt import stop_on_sigterm
from bench.progress import Convergence
from bench.runtime_targets import TARGETS, KopfTuning
from fixtures.samples import WIDGETS, widget, widget_crd
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.pki import ADMIN
from kokpit.runtime import Client, ClientConfig, NotFound
from kokpit.runtime.resources import NAMESPACES

WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: What each result means, recorded with it (the README table quotes these).
MEANING = {
    "converged": "every Widget has status.observedGeneration == metadata.generation, "
    "as seen by one watch of the benchmark",
    "cluster": "the embedded local meta-cluster (real etcd, kube-apiserver, controller-manager, "
    "scheduler); no nodes are involved",
}


def widget_writes(cluster: LocalCluster) -> int:
    """Writes to widgets (any subresource) so far, as the API server counts them."""
    pki = cluster.layout.pki
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.client_cert(ADMIN)), str(pki.client_key(ADMIN)))
    with urllib.request.urlopen(f"{cluster.server}/metrics", context=ctx, timeout=30) as r:
        text = r.read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="widgets"' in line:
            verb = re.search(r'verb="(\w+)"', line)
            if verb and verb.group(1) in WRITE_VERBS:
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def populate(client: Client, namespace: str, count: int) -> None:
    gate = asyncio.Semaphore(64)

    async def create(i: int) -> None:
        async with gate:
            await client.create(WIDGETS, widget(namespace, f"w-{i:05d}"))

    await asyncio.gather(*(create(i) for i in range(count)))


async def edit(client: Client, progress: Convergence, namespace: str, count: int) -> None:
    gate = asyncio.Semaphore(64)

    async def bump(i: int) -> None:
        async with gate:
            edited = await client.patch(
                WIDGETS, f"w-{i:05d}", {"spec": {"size": 2}}, namespace=namespace
            )
            progress.require(edited)

    await asyncio.gather(*(bump(i) for i in range(count)))


async def delete_namespace(client: Client, namespace: str, limit: float = 600.0) -> None:
    """Delete ``namespace`` and wait until it is gone, so the next measurement starts from
    an API server that holds no Widgets."""
    await client.delete(NAMESPACES, namespace)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            await client.get(NAMESPACES, namespace)
        except NotFound:
            return
        await asyncio.sleep(1)
    raise TimeoutError(f"namespace {namespace} still there after {limit:.0f} s")


async def measure(
    target: str,
    run: int,
    size: int,
    cluster: LocalCluster,
    client: Client,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[tuple[float, int]]]:
    """One measurement of ``target``; returns its figures and its convergence timeline."""
    namespace = f"bench-{target}-{size}-{run}"
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    await populate(client, namespace, size)
    await asyncio.sleep(args.settle)
    edits = max(1, int(size * args.edit_share))
    result: dict[str, Any] = {"run": run}
    timeline: list[tuple[float, int]] = []
    log_path = Path(cluster.layout.root) / "logs" / f"bench-{namespace}.log"
    command = [sys.executable, "-m", "bench.runtime_targets", target, "--namespace", namespace]
    command += ["--data-dir", str(cluster.layout.root), "--kopf-tuning", args.kopf_tuning]
    async with Convergence(client, WIDGETS, namespace) as progress:
        writes_before = widget_writes(cluster)
        with open(log_path, "w") as log:
            progress.mark()
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                result["converge_s"] = await progress.wait(args.timeout)
                timeline = progress.timeline
                result["writes_per_object"] = round(
                    (widget_writes(cluster) - writes_before) / size, 3
                )

                writes_before = widget_writes(cluster)
                progress.mark()
                await edit(client, progress, namespace, edits)
                result["edit_converge_s"] = await progress.wait(args.timeout)
                await asyncio.sleep(2)  # let late writes land before counting
                writes = widget_writes(cluster) - writes_before - edits
                result["writes_per_edit"] = round(writes / edits, 3)

                await asyncio.sleep(5)
                cpu_before, idle_started = cpu_seconds(proc.pid), time.monotonic()
                await asyncio.sleep(args.idle)
                idle_cpu = cpu_seconds(proc.pid) - cpu_before
                result["idle_cpu_pct"] = round(
                    100 * idle_cpu / (time.monotonic() - idle_started), 3
                )
                result["peak_rss_mib"] = peak_rss_mib(proc.pid)
            except TimeoutError as e:
                result["error"] = str(e)
                result["unconverged"] = progress.behind
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    await delete_namespace(client, namespace)
    await asyncio.sleep(args.settle)
    print(f"[{size} {target} run {run}] {result}", flush=True)
    return result, timeline


def fastest_kopf_tuning(results: Path) -> str:
    """The fastest ``kopf`` configuration ``bench.kopf_tuning`` found, or the
    :class:`KopfTuning` defaults when it has not run."""
    try:
        candidates = json.loads((results / "kopf-tuning.json").read_text())["candidates"]
    except (OSError, ValueError, KeyError):
        return ""
    tuned = [c for c in candidates if c["target"] == "kopf" and c["median_converge_s"]]
    return str(tuned[0]["tuning"]) if tuned else ""


def order(targets: list[str], run: int) -> list[str]:
    """The targets rotated by ``run``: each takes every position in turn."""
    shift = run % len(targets)
    return targets[shift:] + targets[:shift]


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for package in ("aiohttp", "orjson", "kopf"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per target: the spread of each figure; and the within-run ratios the README quotes."""
    ok = {t: [r for r in rs if "error" not in r] for t, rs in runs.items()}
    summary: dict[str, Any] = {t: stats.summarize(rs) for t, rs in ok.items() if rs}
    ratios: dict[str, Any] = {}
    for name, (num, den) in {
        "kokpit_over_floor": ("kokpit", "floor"),
        "kopf_over_kokpit": ("kopf", "kokpit"),
        "kopf_default_over_kokpit": ("kopf-default", "kokpit"),
        "kopf_default_over_kopf": ("kopf-default", "kopf"),
    }.items():
        if num in ok and den in ok:
            spread = stats.ratio(_by_run(ok[num]), _by_run(ok[den]), "converge_s")
            if spread is not None:
                ratios[f"{name}_converge"] = spread
    summary["ratios"] = ratios
    return summary


def _by_run(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(runs, key=lambda r: int(r["run"]))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = ensure_assets(release(None))
    results: dict[str, Any] = {}
    timelines: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-runtime-") as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.up(assets, progress=lambda _: None)
        try:
            kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
            kubectl.apply([widget_crd()])
            kubectl.wait_established("widgets.test.kokpit.io")
            await asyncio.sleep(args.settle)
            config = ClientConfig.from_kubeconfig(cluster.kubeconfig, qps=5000, burst=10000)
            async with Client(config) as client:
                for size in args.sizes:
                    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in args.targets}
                    lines: dict[str, list[tuple[float, int]]] = {}
                    for r in range(args.runs):
                        for target in order(args.targets, r):
                            result, timeline = await measure(target, r, size, cluster, client, args)
                            runs[target].append(result)
                            lines.setdefault(target, timeline)  # the first run's curve
                    results[str(size)] = {"runs": runs, "summary": summarize(runs)}
                    timelines[str(size)] = lines
        finally:
            cluster.down()
    return {
        "kubernetes": assets.kubernetes_version,
        "meaning": MEANING,
        "sizes": args.sizes,
        "runs": args.runs,
        "edit_share": args.edit_share,
        "idle_seconds": args.idle,
        "settle_seconds": args.settle,
        "targets": args.targets,
        "kopf_tuning": KopfTuning.parse(args.kopf_tuning).describe(),
        "versions": versions(),
        "results": results,
        "timelines": timelines,
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=machine.ints, default=[1_000, 3_000, 10_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--edit-share", type=float, default=0.1)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--targets", type=lambda s: s.split(","), default=list(TARGETS))
    parser.add_argument(
        "--kopf-tuning",
        default=None,
        help="the kopf target's settings, e.g. worker_limit=64,idle_timeout=0.1,connections=64 "
        "(default: the fastest in kopf-tuning.json from bench.kopf_tuning)",
    )
    parser.add_argument(
        "--name",
        default="runtime",
        help="the result's name (bench/results/NAME.json): a run of some sizes or targets only "
        "is written beside the one the docs quote, not over it",
    )
    args = machine.parse_args(
        parser, quick={"sizes": [300, 1000, 2000], "runs": 2, "idle": 5.0, "settle": 2.0}
    )
    if args.kopf_tuning is None:
        args.kopf_tuning = fastest_kopf_tuning(machine.QUICK if args.quick else machine.RESULTS)
    result = asyncio.run(run(args))
    path = machine.write(args.name, result, quick=args.quick)
    if args.name != "runtime":  # the plots are the quoted result's: not redrawn from a part
        print(f"wrote {path}")
        return
    plots = plot.runtime(result, path.parent / "plots")
    print(f"wrote {path}; plots: {', '.join(str(p) for p in plots)}")


if __name__ == "__main__":
    main()
