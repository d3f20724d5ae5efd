"""The guard's decision latency under concurrent callers → ``results/risk.json``.

One fresh local control plane holds one RiskPolicy; child processes (each a guard in its own
process, as each operator replica holds one, with the operators' default client rate limit)
run C concurrent callers that each ask, get an answer, report the action done, and ask again,
for a fixed time. Recorded per level: the answers per second, the latency of an ask (from the
call to its answer) at p50 and p99, and the API requests per answer (group commit: the asks
that arrive while a write is under way are decided in the next one). Every level is repeated,
rotated, and reported as median and range.

The budget is also checked under contention: two processes of 200 callers each ask once
under a policy of 100 grants per window; the result says how many were allowed (100 is right,
more would be a budget spent twice).

    python -m bench.risk [--callers 1,20,200] [--seconds 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import machine as machine_info
from bench import plot, stats
from bench.interrupt import stop_on_sigterm
from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import KINDS
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.providers.guard import RiskRequest
from kokpit.providers.guard.local import LocalGuard
from kokpit.runtime import Cache, Client, ClientConfig
from kokpit.runtime.metrics import REST_REQUESTS

#: The operators' default client rate limit (``kokpit operator --qps``).
QPS = 200.0


def _requests() -> dict[str, float]:
    counts: dict[str, float] = {}
    for metric in REST_REQUESTS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = f"{sample.labels['method']} {sample.labels['code']}"
                counts[key] = counts.get(key, 0) + sample.value
    return counts


async def child(
    kubeconfig: Path, policy: str, callers: int, seconds: float, once: bool
) -> dict[str, Any]:
    config = ClientConfig.from_kubeconfig(kubeconfig, qps=QPS, burst=int(QPS * 2))
    async with Client(config) as client:
        cache = Cache(client)
        guard = LocalGuard.on(cache, f"bench-{id(client)}")
        task = asyncio.create_task(cache.start())
        await cache.wait_synced()
        before = _requests()
        latencies: list[float] = []
        allowed = 0
        deadline = time.monotonic() + seconds
        tag = f"{time.time_ns()}"

        async def caller(n: int) -> None:
            nonlocal allowed
            i = 0
            while True:
                request = RiskRequest("Reboot", f"{tag}-{n}-{i}", f"Machine bench/m{n}")
                started = time.monotonic()
                verdict = await guard.acquire(request)
                latencies.append(time.monotonic() - started)
                allowed += verdict.allowed
                if once:
                    return
                if verdict.allowed:
                    await guard.release(request, "Succeeded")
                i += 1
                if time.monotonic() >= deadline:
                    return

        started = time.monotonic()
        await asyncio.gather(*(caller(n) for n in range(callers)))
        elapsed = time.monotonic() - started
        after = _requests()
        task.cancel()  # the informers stop before their connection closes
        with contextlib.suppress(asyncio.CancelledError):
            await task
    requests = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    latencies.sort()
    return {
        "callers": callers,
        "answers": len(latencies),
        "allowed": allowed,
        "seconds": round(elapsed, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "requests": requests,
    }


def spawn(
    kubeconfig: Path, policy: str, callers: int, seconds: float, once: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.risk", "--child", policy),
            *(
                "--callers",
                str(callers),
                "--seconds",
                str(seconds),
                "--kubeconfig",
                str(kubeconfig),
            ),
            *(("--once",) if once else ()),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def collect(processes: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"a child failed ({process.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def level(kubeconfig: Path, callers: int, processes: int, seconds: float) -> dict[str, Any]:
    """One run: ``callers`` in all, spread over ``processes``."""
    parts = collect(
        [spawn(kubeconfig, "budget", callers // processes, seconds) for _ in range(processes)]
    )
    answers = sum(p["answers"] for p in parts)
    requests = sum(sum(p["requests"].values()) for p in parts)
    conflicts = sum(v for p in parts for k, v in p["requests"].items() if k.endswith(" 409"))
    return {
        "callers": callers,
        "processes": processes,
        "answers_per_second": round(answers / max(p["seconds"] for p in parts), 1),
        # Each process's percentiles; the worst of them is what a caller may see.
        "p50_ms": max(p["p50_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "requests_per_answer": round(requests / answers, 3),
        "conflicts": conflicts,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = ensure_assets(release(None))
    levels = [(c, 1) for c in args.callers] + [(max(args.callers), 2)]
    runs: dict[str, list[dict[str, Any]]] = {f"{c}x{p}": [] for c, p in levels}
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-risk-") as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.up(assets, progress=lambda _: None)
        try:
            kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
            kubectl.apply([crd(k) for k in KINDS])
            kubectl.wait_established(*(f"{k.plural}.{k.group}" for k in KINDS))
            budget = {"actions": ["Reboot"], "maxInFlight": 10000, "breaker": {"maxFailures": 3}}
            kubectl.apply([_policy("budget", budget)])
            for n in range(args.runs):
                for c, p in levels[n % len(levels) :] + levels[: n % len(levels)]:
                    result = level(cluster.kubeconfig, c, p, args.seconds)
                    print(f"  run {n + 1}: {result}", flush=True)
                    runs[f"{c}x{p}"].append(result)
            kubectl.run("delete", "riskpolicy", "budget")
            limited = {"actions": ["Reboot"], "rateLimit": {"count": 100, "windowSeconds": 600}}
            kubectl.apply([_policy("limited", limited)])
            time.sleep(2)  # the children's informers list it at start anyway
            race = collect(
                [spawn(cluster.kubeconfig, "limited", 200, 60, once=True) for _ in range(2)]
            )
        finally:
            cluster.down()
    return {
        "what": (
            "a guard per child process (the operators' default client rate limit, "
            f"{QPS:.0f} qps), C callers each asking, then reporting done, for a fixed time; "
            "latency = from the ask to its answer; requests per answer = every API request of "
            "the children (reads of the policy and ledger, ledger writes, 409s) per answer"
        ),
        "seconds_per_run": args.seconds,
        "levels": {key: {"runs": r, **stats.summarize(r)} for key, r in runs.items()},
        "budget_race": {
            "what": "2 processes x 200 callers ask once each under 100 grants per 600 s",
            "allowed": sum(p["allowed"] for p in race),
            "limit": 100,
        },
        "kubernetes": assets.kubernetes_version,
        "versions": {p: version(p) for p in ("aiohttp", "orjson")},
    }


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": "RiskPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=machine_info.ints, default=[1, 20, 200])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    args = machine_info.parse_args(parser, quick={"seconds": 3.0, "runs": 1})
    if args.child:
        callers = args.callers if isinstance(args.callers, int) else args.callers[0]
        result = asyncio.run(child(args.kubeconfig, args.child, callers, args.seconds, args.once))
        print(json.dumps(result), flush=True)
        return
    result = run(args)
    path = machine_info.write("risk", result, quick=args.quick, keep=("rollout",))
    plot.risk(result, path.parent / "plots")
    print(json.dumps({k: v["p99_ms"] for k, v in result["levels"].items()}), f"→ {path}")


if __name__ == "__main__":
    main()
