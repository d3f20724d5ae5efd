"""Which kopf settings converge fastest here → ``bench/results/kopf-tuning.json``.

The runtime benchmark compares kokpit with kopf *as a user at this scale would configure it*.
This finds that configuration instead of guessing it: on one local meta-cluster, the ``kopf``
target of :mod:`bench.runtime_targets` (an ``async def`` handler) runs with each combination
of worker limit and connection limit (see :func:`tunings`), each ``--runs`` times, and the
result lists the median convergence time of each, fastest first. ``kopf-default`` (kopf's defaults
and a plain ``def`` handler) runs alongside, as the reference.

    python -m bench.kopf_tuning [--objects 2000] [--runs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import machine
from bench.interrupt import stop_on_sigterm
from bench.runtime import measure, versions
from bench.runtime_targets import KopfTuning
from fixtures.samples import widget_crd
from kokpit.local import Kubectl, LocalCluster, ensure_assets, release
from kokpit.runtime import Client, ClientConfig

#: ``None`` is kopf's own default (no limit).
WORKER_LIMITS = (None, 16, 64, 256)
#: kopf's default idle timeout is 5 s; 0.1 s lets a slot go as soon as its object is done.
SHORT_IDLE = 0.1
#: ``0``: no limit, kopf's own client's default.
CONNECTIONS = (0, 64)
#: A worker limit W with kopf's 5 s idle timeout: each slot lingers 5 s after its object, so
#: at most W/5 objects a second converge (16 workers: 3.2/s, over 10 minutes for 2,000). One
#: such candidate shows it; the slower ones would only take time.
DEFAULT_IDLE_EXAMPLE = KopfTuning(worker_limit=64, idle_timeout=5.0, connections=64)


def tunings() -> list[str]:
    """The candidates, as ``--kopf-tuning`` strings naming every setting (a missing one would
    take :class:`KopfTuning`'s default, not kopf's): every worker limit and connection limit
    with a short idle timeout (without a worker limit no worker waits for a slot, so the idle
    timeout is moot and stays kopf's), and :data:`DEFAULT_IDLE_EXAMPLE`."""
    out = []
    for workers, connections in itertools.product(WORKER_LIMITS, CONNECTIONS):
        idle = 5.0 if workers is None else SHORT_IDLE
        out.append(KopfTuning(workers, idle, connections).text())
    out.append(DEFAULT_IDLE_EXAMPLE.text())
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = ensure_assets(release(None))
    candidates: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kokpit-bench-kopf-") as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.up(assets, progress=lambda _: None)
        try:
            kubectl = Kubectl(assets.bin("kubectl"), cluster.kubeconfig)
            kubectl.apply([widget_crd()])
            kubectl.wait_established("widgets.test.kokpit.io")
            config = ClientConfig.from_kubeconfig(cluster.kubeconfig, qps=5000, burst=10000)
            async with Client(config) as client:
                plans = [("kopf-default", "")] + [("kopf", t) for t in tunings()]
                for i, (target, tuning) in enumerate(plans):
                    runs = []
                    for r in range(args.runs):
                        args.kopf_tuning = tuning
                        result, _ = await measure(
                            target, i * args.runs + r, args.objects, cluster, client, args
                        )
                        runs.append(result)
                    times = [r["converge_s"] for r in runs if "converge_s" in r]
                    candidates.append(
                        {
                            "target": target,
                            "tuning": tuning or "kopf defaults",
                            "converge_s": times,
                            "median_converge_s": statistics.median(times) if times else None,
                            "peak_rss_mib": max(r.get("peak_rss_mib", 0) for r in runs),
                        }
                    )
        finally:
            cluster.down()
    candidates.sort(key=lambda c: c["median_converge_s"] or float("inf"))
    return {
        "kubernetes": assets.kubernetes_version,
        "objects": args.objects,
        "runs": args.runs,
        "versions": versions(),
        "candidates": candidates,
    }


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = machine.parse_args(parser, quick={"objects": 500, "runs": 1})
    # What bench.runtime.measure reads besides the tuning: a short edit and idle phase.
    args.edit_share, args.idle, args.settle = 0.1, 1.0, 3.0
    result = asyncio.run(run(args))
    print(f"wrote {machine.write('kopf-tuning', result, quick=args.quick)}")


if __name__ == "__main__":
    main()
