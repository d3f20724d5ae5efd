"""``kokpit operator cluster``: run the Cluster-Operator.

    kokpit operator cluster [--kubeconfig PATH] [--runtimes kubernetes,process]
                            [--process-root DIR] [--leader-elect] [--health-port N]

In a pod it uses the pod's service account; elsewhere ``--kubeconfig`` or ``$KUBECONFIG``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from pathlib import Path
from typing import Any

from kokpit.controllers.cluster import ClusterOptions, setup
from kokpit.providers.controlplane import ControlPlaneRuntime
from kokpit.providers.controlplane.kubernetes import KubernetesRuntime
from kokpit.providers.controlplane.process import ProcessRuntime
from kokpit.runtime import (
    Client,
    ClientConfig,
    EventRecorder,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
)
from kokpit.runtime.log import configure


def register(sub: Any) -> None:
    p = sub.add_parser(
        "operator",
        help="run one of kokpit's operators",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = p.add_subparsers(dest="operator", required=True, metavar="OPERATOR")
    c = which.add_parser("cluster", help="the Cluster-Operator")
    c.add_argument("--kubeconfig", type=Path, default=None)
    c.add_argument(
        "--runtimes",
        default="kubernetes,process",
        help="control-plane runtimes to enable (default: both)",
    )
    c.add_argument(
        "--process-root",
        type=Path,
        default=Path.home() / ".local" / "share" / "kokpit" / "controlplanes",
    )
    c.add_argument("--leader-elect", action="store_true")
    c.add_argument("--namespace", default="kokpit-system", help="where the leader Lease lives")
    c.add_argument("--health-port", type=int, default=8081)
    c.add_argument("--workers", type=int, default=8)
    c.set_defaults(run=run_cluster)


def run_cluster(args: argparse.Namespace) -> int:
    configure()
    asyncio.run(_cluster(args))
    return 0


async def _cluster(args: argparse.Namespace) -> None:
    config = ClientConfig.load(args.kubeconfig, qps=200, burst=400)
    identity = f"{socket.gethostname()}_{os.getpid()}"
    async with Client(config) as client:
        election = (
            LeaderElectionConfig(args.namespace, "kokpit-cluster-operator", identity)
            if args.leader_elect
            else None
        )
        manager = Manager(
            client, ManagerOptions(leader_election=election, health_port=args.health_port)
        )
        available: dict[str, ControlPlaneRuntime] = {
            "kubernetes": KubernetesRuntime(client),
            "process": ProcessRuntime(args.process_root),
        }
        runtimes = {n: available[n] for n in args.runtimes.split(",") if n}
        recorder = EventRecorder(client, "kokpit.io/cluster-operator", identity)
        setup(manager, runtimes, recorder, ClusterOptions(max_concurrent_reconciles=args.workers))
        await manager.start()
