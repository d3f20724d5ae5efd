"""kokpit's runtime against kopf and a bare-client floor → ``bench/results/runtime.json``.

On a fresh local meta-cluster, each target (see :mod:`bench.runtime_targets`) gets a namespace
of its own holding N Widgets, and runs as its own process. For each the benchmark records:

- ``converge_s``: from the target's start until every Widget has
  ``status.observedGeneration == metadata.generation``;
- ``writes_per_object``: widget writes counted by the API server itself
  (``apiserver_request_total``, verbs POST/PUT/PATCH/APPLY/DELETE), divided by N;
- ``edit_converge_s`` and ``writes_per_edit``: the same after the benchmark edits the spec of
  E Widgets (its own E writes are subtracted);
- ``peak_rss_mib``: the target's VmHWM;
- ``idle_cpu_pct``: CPU the target used, as a percentage of one core, while idle for S seconds
  after converging.

The targets run one after another in the same run, on the same cluster, so ratios compare.

    python -m bench.runtime [--objects N] [--edits E] [--idle S] [--targets floor,kokpit,kopf]
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench import machine
from bench.interrupt import stop_on_sigterm
from fixtures.samples import WIDGETS, widget, widget_crd
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.pki import ADMIN
from kokpit.runtime import Client, ClientConfig
from kokpit.runtime.resources import NAMESPACES

WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


async def unconverged(client: Client, namespace: str) -> int:
    listed = await client.list(WIDGETS, namespace=namespace, limit=2000)
    return sum(
        (o.get("status") or {}).get("observedGeneration") != o["metadata"]["generation"]
        for o in listed.items
    )


async def wait_converged(client: Client, namespace: str, started: float, limit: float) -> float:
    while time.monotonic() - started < limit:
        if await unconverged(client, namespace) == 0:
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"not converged within {limit:.0f} s")


async def populate(client: Client, namespace: str, count: int) -> None:
    gate = asyncio.Semaphore(64)

    async def create(i: int) -> None:
        async with gate:
            await client.create(WIDGETS, widget(namespace, f"w-{i:05d}"))

    await asyncio.gather(*(create(i) for i in range(count)))


async def edit(client: Client, namespace: str, count: int) -> None:
    gate = asyncio.Semaphore(64)

    async def bump(i: int) -> None:
        async with gate:
            await client.patch(WIDGETS, f"w-{i:05d}", {"spec": {"size": 2}}, namespace=namespace)

    await asyncio.gather(*(bump(i) for i in range(count)))


async def measure(
    target: str, cluster: LocalCluster, client: Client, args: argparse.Namespace
) -> dict[str, Any]:
    namespace = f"bench-{target}"
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    await populate(client, namespace, args.objects)
    print(f"[{target}] {args.objects} widgets created", flush=True)
    result: dict[str, Any] = {}
    writes_before = widget_writes(cluster)
    log = open(Path(cluster.layout.root) / "logs" / f"bench-{target}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.runtime_targets",
            target,
            "--namespace",
            namespace,
            "--data-dir",
            str(cluster.layout.root),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = time.monotonic()
        result["converge_s"] = await wait_converged(client, namespace, started, args.timeout)
        result["writes_per_object"] = round(
            (widget_writes(cluster) - writes_before) / args.objects, 3
        )
        print(f"[{target}] converged in {result['converge_s']} s", flush=True)

        writes_before = widget_writes(cluster)
        started = time.monotonic()
        await edit(client, namespace, args.edits)
        result["edit_converge_s"] = await wait_converged(client, namespace, started, args.timeout)
        await asyncio.sleep(2)  # let late writes land before counting
        writes = widget_writes(cluster) - writes_before - args.edits
        result["writes_per_edit"] = round(writes / args.edits, 3)
        print(
            f"[{target}] {args.edits} edits converged in {result['edit_converge_s']} s", flush=True
        )

        await asyncio.sleep(5)
        cpu_before, idle_started = cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(args.idle)
        idle_cpu = cpu_seconds(proc.pid) - cpu_before
        result["idle_cpu_pct"] = round(100 * idle_cpu / (time.monotonic() - idle_started), 3)
        result["peak_rss_mib"] = peak_rss_mib(proc.pid)
    except TimeoutError as e:
        result["error"] = str(e)
        result["unconverged"] = await unconverged(client, namespace)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    print(f"[{target}] {result}", flush=True)
    return result


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for package in ("aiohttp", "orjson", "kopf"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = ensure_assets(release(None))
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-runtime-") as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.up(assets, progress=lambda _: None)
        try:
            kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
            kubectl.apply([widget_crd()])
            kubectl.wait_established("widgets.test.kokpit.io")
            config = ClientConfig.from_kubeconfig(cluster.kubeconfig, qps=5000, burst=10000)
            async with Client(config) as client:
                results = {t: await measure(t, cluster, client, args) for t in args.targets}
        finally:
            cluster.down()
    summary: dict[str, Any] = {}
    if "kokpit" in results and "kopf" in results and "converge_s" in results["kopf"]:
        summary["kopf_over_kokpit_converge"] = round(
            results["kopf"]["converge_s"] / results["kokpit"]["converge_s"], 2
        )
    if "kokpit" in results and "floor" in results:
        summary["kokpit_over_floor_converge"] = round(
            results["kokpit"]["converge_s"] / results["floor"]["converge_s"], 2
        )
    return {
        "kubernetes": assets.kubernetes_version,
        "objects": args.objects,
        "edits": args.edits,
        "idle_seconds": args.idle,
        "versions": versions(),
        "results": results,
        "summary": summary,
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=1_000)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument(
        "--targets", type=lambda s: s.split(","), default=["floor", "kokpit", "kopf"]
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"wrote {machine.write('runtime', result)}")


if __name__ == "__main__":
    main()
