"""``kokpit operator OPERATOR``: run one of kokpit's operators (cluster, machine, remediation,
guard, probe, rollout).

    kokpit operator cluster [--kubeconfig PATH] [--runtimes kubernetes[,process]]
                            [--process-root DIR] [--restart-budget N]
                            [--restart-window SECONDS] [--leader-elect] [--health-port N]
                            [--control-plane-node-selector KEY=VALUE[,KEY=VALUE]]
                            [--image-repository REPO] [--etcd-storage-class NAME]
    kokpit operator machine [--kubeconfig PATH] [--executors ssh[,sim]] [--kwok-nodes ...]
                            [--sim-latency S] [--sim-failure-rate P] [--leader-elect] ...
    kokpit operator remediation [--kubeconfig PATH] [--executors ssh[,sim]]
                            [--not-ready-grace S] [--lease-grace S] [--probe-period S]
                            [--probe-concurrency N] [--retention S] [--admission-delay S]
                            [--leader-elect] ...
    kokpit operator probe   [--kubeconfig PATH] [--period S] [--timeout S] [--concurrency N]
                            [--image IMAGE] [--leader-elect] [--health-port N] ...

In a pod it uses the pod's service account; elsewhere ``--kubeconfig`` or ``$KUBECONFIG``.

Risky capabilities are opt-in. The ``process`` runtime runs business control planes as
processes on the operator's own host (as its user, with its files); the ``sim`` executor
plays hosts and registers Nodes that no machine stands behind. Neither is on unless named:
by default the Cluster-Operator runs the ``kubernetes`` runtime only and the Machine-Operator
the ``ssh`` executor only. A Cluster or Machine that asks for one that is off gets a
condition saying which flag turns it on.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from kokpit.api.v1alpha1 import MACHINES
from kokpit.controllers import cluster, fault, guard, machine, probe, remediation, rollout
from kokpit.controllers.cluster import ClusterOptions
from kokpit.controllers.fault import FaultOptions
from kokpit.controllers.machine import MachineOptions
from kokpit.controllers.rollout import RolloutOptions
from kokpit.providers.analysis import PrometheusReader
from kokpit.providers.controlplane import ControlPlaneRuntime
from kokpit.providers.controlplane.clients import business_clusters
from kokpit.providers.controlplane.kubernetes import (
    IMAGE_REPOSITORY,
    KubernetesRuntime,
    KubernetesRuntimeOptions,
)
from kokpit.providers.controlplane.process import ProcessRuntime
from kokpit.providers.guard.health import MachineHealth
from kokpit.providers.guard.local import LocalGuard
from kokpit.providers.machine import Executor
from kokpit.providers.machine.sim import SimExecutor
from kokpit.providers.machine.ssh import SSHExecutor
from kokpit.providers.repair import Repairer
from kokpit.providers.repair.executor import ExecutorRepairer
from kokpit.providers.repair.redfish import RedfishRepairer
from kokpit.providers.repair.reprovision import ReprovisionRepairer
from kokpit.providers.repair.secrets import secret_reader
from kokpit.providers.repair.webhook import EscalationNotifier, TicketRepairer, WebhookClient
from kokpit.runtime import (
    Client,
    ClientConfig,
    EventRecorder,
    LeaderElectionConfig,
    Manager,
    ManagerOptions,
    signals,
)
from kokpit.runtime.leader import new_identity
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
    _common(c, workers=8)
    c.add_argument(
        "--runtimes",
        type=_names("kubernetes", "process"),
        default=("kubernetes",),
        help="control-plane runtimes to enable, of kubernetes,process (default: kubernetes; "
        "process runs control planes on this host and must be asked for)",
    )
    c.add_argument(
        "--process-root",
        type=Path,
        default=Path.home() / ".local" / "share" / "kokpit" / "controlplanes",
    )
    defaults = ClusterOptions()
    c.add_argument(
        "--restart-budget",
        type=_positive(int),
        default=defaults.restart_budget,
        help="restarts of one control-plane component (process runtime) within "
        "--restart-window before its Cluster turns Degraded and kokpit stops restarting it "
        f"(default: {defaults.restart_budget})",
    )
    c.add_argument(
        "--restart-window",
        type=_positive(float),
        default=defaults.restart_window_seconds,
        metavar="SECONDS",
        help=f"the restart budget's window (default: {defaults.restart_window_seconds:.0f})",
    )
    c.add_argument(
        "--control-plane-node-selector",
        type=_labels,
        default={},
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="kubernetes runtime: the labels of the nodes control-plane pods run on (default: "
        "any node; the local meta-cluster's real node is kokpit.io/real-node=true)",
    )
    c.add_argument(
        "--image-repository",
        default=IMAGE_REPOSITORY,
        help="kubernetes runtime: where component images come from when a package version "
        f"names none (default: {IMAGE_REPOSITORY}; the local meta-cluster's: localhost/kokpit)",
    )
    c.add_argument(
        "--etcd-storage-class",
        default=None,
        help="kubernetes runtime: etcd's data on PersistentVolumeClaims of this storage class "
        "(default: none, an emptyDir that does not survive a pod's deletion)",
    )
    c.add_argument(
        "--bootstrap-token-ttl",
        type=_positive(float),
        default=defaults.bootstrap_token_ttl_seconds,
        help="seconds a bootstrap token for joining hosts lasts (a successor is issued when "
        "a third of it is left)",
    )
    c.set_defaults(run=run_cluster)
    m = which.add_parser("machine", help="the Machine-Operator")
    _common(m, workers=16)
    m.add_argument(
        "--executors",
        type=_names("ssh", "sim"),
        default=("ssh",),
        help="executors to enable, of ssh,sim (default: ssh; sim registers simulated Nodes "
        "and must be asked for)",
    )
    m.add_argument(
        "--kwok-nodes",
        type=_names("ssh", "sim"),
        default=("sim",),
        help="executors whose hosts run no kubelet, so kokpit registers their Nodes for KWOK "
        "(default: sim; test hosts over ssh add ssh). Other hosts' Nodes come from their "
        "own kubelet",
    )
    m.add_argument("--sim-latency", type=float, default=0.0, help="seconds per simulated step")
    m.add_argument(
        "--sim-failure-rate", type=float, default=0.0, help="share of simulated steps that fail"
    )
    m.add_argument("--recheck-interval", type=float, default=600.0)
    m.add_argument(
        "--cluster-qps",
        type=float,
        default=50.0,
        help="API requests per second per business cluster",
    )
    m.set_defaults(run=run_machine)
    _remediation(which.add_parser("remediation", help="the fault hub and remediations"))
    _guard_service_args(
        which.add_parser("guard", help="the guard over HTTPS, for operators that ask remotely")
    )
    _probe_args(which.add_parser("probe", help="the pod-creation probe of every business cluster"))
    _rollout(which.add_parser("rollout", help="gray-scale rollouts of package versions"))


def _remediation(r: argparse.ArgumentParser) -> None:
    # 32: the hub's and the workflow's reconciles wait on API requests (tens of ms each under
    # load), not on CPU; with 8, a burst of a hundred faults queued for seconds behind them
    # (bench/results/healing-workers32.json).
    _common(r, workers=32)
    d = FaultOptions()
    r.add_argument(
        "--executors",
        type=_names("ssh", "sim"),
        default=("ssh",),
        help="executors of the hosts probed and soft-repaired (restarts, reboot), of ssh,sim "
        "(default: ssh; sim takes hosts as provisioned by the Machine-Operator's simulator and "
        "must be asked for)",
    )

    def seconds(flag: str, default: float, what: str) -> None:
        r.add_argument(
            flag,
            type=_positive(float),
            default=default,
            metavar="SECONDS",
            help=f"{what} (default: {default:g})",
        )

    seconds("--not-ready-grace", d.not_ready_grace, "Ready not True this long is NodeNotReady")
    seconds("--lease-grace", d.lease_grace, "a node Lease not renewed this long is NodeLeaseStale")
    seconds("--probe-period", d.probe_period, "each host is probed once per period, spread")
    seconds("--probe-timeout", d.probe_timeout, "a probe step longer than this fails")
    seconds("--last-seen-interval", d.last_seen_interval, "an Active fault's lastSeen refresh")
    seconds("--retention", d.retention, "Cleared NodeFaults are deleted this long after")
    r.add_argument(
        "--probe-concurrency",
        type=_positive(int),
        default=d.probe_concurrency,
        help=f"hosts probed at once (default: {d.probe_concurrency})",
    )
    r.add_argument(
        "--cluster-qps",
        type=float,
        default=50.0,
        help="API requests per second per business cluster (the hub and the workflow share it)",
    )
    r.add_argument(
        "--admission-delay",
        type=float,
        default=remediation.RemediationOptions.admission_delay,
        metavar="SECONDS",
        help="how long a new remediation waits before it may start, so the faults of a storm "
        "are all counted first",
    )
    r.set_defaults(run=run_remediation)


def _rollout(r: argparse.ArgumentParser) -> None:
    d = RolloutOptions()
    _common(r, workers=d.max_concurrent_reconciles)
    r.add_argument(
        "--max-concurrent-changes",
        type=_positive(int),
        default=d.max_concurrent_changes,
        help=f"objects one rollout changes at once (default: {d.max_concurrent_changes})",
    )
    r.add_argument(
        "--poll-interval",
        type=_positive(float),
        default=d.poll_interval,
        metavar="SECONDS",
        help=f"how often a waiting rollout looks again (default: {d.poll_interval:g})",
    )
    r.set_defaults(run=run_rollout)


def _guard_service_args(g: argparse.ArgumentParser) -> None:
    _common(g, workers=1)
    g.add_argument("--bind-address", default="0.0.0.0", help="where to serve (default: all)")
    g.add_argument("--port", type=int, default=8443, help="the HTTPS port (0: a free one)")
    g.add_argument("--tls-cert-file", type=Path, required=True, help="the serving certificate")
    g.add_argument("--tls-key-file", type=Path, required=True, help="its private key")
    g.set_defaults(run=run_guard)


def _probe_args(p: argparse.ArgumentParser) -> None:
    _common(p, workers=1)
    d = probe.ProbeOptions()
    p.add_argument(
        "--period",
        type=_positive(float),
        default=d.period,
        metavar="SECONDS",
        help=f"seconds between two probes of one cluster (default: {d.period:g})",
    )
    p.add_argument(
        "--timeout",
        type=_positive(float),
        default=d.timeout,
        metavar="SECONDS",
        help=f"a pod not Running this long after its create is a failure (default: {d.timeout:g})",
    )
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        default=d.concurrency,
        help=f"clusters probed at once (default: {d.concurrency})",
    )
    p.add_argument("--image", default=d.image, help=f"the probe pods' image (default: {d.image})")
    p.add_argument(
        "--cluster-qps",
        type=float,
        default=5.0,
        help="API requests per second per business cluster",
    )
    p.set_defaults(run=run_probe)


def _common(p: argparse.ArgumentParser, *, workers: int) -> None:
    p.add_argument("--kubeconfig", type=Path, default=None)
    p.add_argument("--leader-elect", action="store_true")
    p.add_argument("--namespace", default="kokpit-system", help="where the leader Lease lives")
    p.add_argument("--health-port", type=int, default=8081)
    p.add_argument(
        "--health-bind-address",
        default="127.0.0.1",
        help="where /healthz, /readyz and /metrics are served (default: this host only; in a "
        "pod, 0.0.0.0, so the kubelet's probes and Prometheus reach them)",
    )
    p.add_argument("--workers", type=int, default=workers)
    p.add_argument("--qps", type=float, default=200.0, help="API requests per second")


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number above zero (of ``kind``)."""

    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above zero, not {text}")
        return value

    return parse


def _labels(text: str) -> dict[str, str]:
    """An argparse type: ``key=value[,key=value]`` (the API server validates the labels
    themselves when it gets the first pod)."""
    pairs = [item.partition("=") for item in text.split(",") if item]
    if not pairs or any(not key or not sep for key, sep, _ in pairs):
        raise argparse.ArgumentTypeError(f"expected key=value[,key=value], got {text!r}")
    return {key: value for key, _, value in pairs}


def _names(*known: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated list of some of ``known`` (a typo is an error at
    start, not a capability silently left off)."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n for n in text.split(",") if n)
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(known)}, got {text!r}"
            )
        return names

    return parse


def run_cluster(args: argparse.Namespace) -> int:
    configure()
    return signals.run(_cluster(args))


async def _cluster(args: argparse.Namespace) -> None:
    async with _manager(args, "cluster") as (manager, recorder):
        available: dict[str, ControlPlaneRuntime] = {
            "kubernetes": KubernetesRuntime(
                manager.client,
                KubernetesRuntimeOptions(
                    etcd_storage_class=args.etcd_storage_class,
                    node_selector=args.control_plane_node_selector,
                    image_repository=args.image_repository,
                ),
            ),
            "process": ProcessRuntime(args.process_root),
        }
        runtimes = {n: available[n] for n in args.runtimes}
        options = ClusterOptions(
            max_concurrent_reconciles=args.workers,
            restart_budget=args.restart_budget,
            restart_window_seconds=args.restart_window,
            bootstrap_token_ttl_seconds=args.bootstrap_token_ttl,
        )
        # It watches no Machines: a maxUnavailablePercent has nothing to count for it.
        asks = _guard(manager, recorder, machines=False)
        cluster.setup(manager, runtimes, recorder, options, asks)
        await manager.start()


def run_machine(args: argparse.Namespace) -> int:
    configure()
    return signals.run(_machine(args))


async def _machine(args: argparse.Namespace) -> None:
    async with _manager(args, "machine") as (manager, recorder):
        available: dict[str, Executor] = {
            "ssh": SSHExecutor(),
            "sim": SimExecutor(latency=args.sim_latency, failure_rate=args.sim_failure_rate),
        }
        executors = {n: available[n] for n in args.executors}
        options = MachineOptions(
            max_concurrent_reconciles=args.workers,
            recheck_interval=args.recheck_interval,
            cluster_qps=args.cluster_qps,
            cluster_burst=int(args.cluster_qps * 2),
        )
        registrars = machine.node_registrars(executors, kwok=set(args.kwok_nodes))
        asks = _guard(manager, recorder)
        reconciler = machine.setup(manager, executors, recorder, options, registrars, asks)
        try:
            await manager.start()
        finally:
            await reconciler.close()
            for executor in available.values():
                await executor.close()


def run_remediation(args: argparse.Namespace) -> int:
    configure()
    return signals.run(_remediation_operator(args))


async def _remediation_operator(args: argparse.Namespace) -> None:
    """The fault hub and the Remediation workflow in one process: the hub records faults, the
    workflow repairs them through the repairers (executor, BMC, the Machine-Operator, ticket)."""
    async with _manager(args, "remediation") as (manager, recorder):
        available: dict[str, Executor] = {
            "ssh": SSHExecutor(),
            # The hosts were provisioned by the Machine-Operator, in its own simulator.
            "sim": SimExecutor(provisioned=True),
        }
        executors = {n: available[n] for n in args.executors}
        # One connection per business cluster for the hub and the workflow; like every
        # controller here they may only get Secrets where they are bound.
        clusters = business_clusters(
            manager, qps=args.cluster_qps, burst=int(args.cluster_qps * 2), watch_secrets=False
        )
        fault.setup(
            manager,
            clusters,
            executors,
            recorder,
            FaultOptions(
                max_concurrent_reconciles=args.workers,
                not_ready_grace=args.not_ready_grace,
                lease_grace=args.lease_grace,
                probe_period=args.probe_period,
                probe_timeout=args.probe_timeout,
                probe_concurrency=args.probe_concurrency,
                last_seen_interval=args.last_seen_interval,
                retention=args.retention,
            ),
        )
        secrets = secret_reader(manager.client)
        webhooks = WebhookClient(secrets=secrets)
        bmc = RedfishRepairer(secrets=secrets)
        repairers: dict[str, Repairer] = {}
        for repairer in (
            ExecutorRepairer(manager.client, executors),
            bmc,
            ReprovisionRepairer(manager.client),
            TicketRepairer(webhooks),
        ):
            repairers.update(dict.fromkeys(repairer.actions, repairer))
        remediation.setup(
            manager,
            clusters,
            repairers,
            recorder,
            remediation.RemediationOptions(
                max_concurrent_reconciles=args.workers, admission_delay=args.admission_delay
            ),
            EscalationNotifier(webhooks),
            _guard(manager, recorder),
        )
        try:
            await manager.start()
        finally:
            await bmc.close()
            await webhooks.close()
            for executor in available.values():
                await executor.close()


def run_rollout(args: argparse.Namespace) -> int:
    configure()
    return signals.run(_rollout_operator(args))


async def _rollout_operator(args: argparse.Namespace) -> None:
    async with _manager(args, "rollout") as (manager, recorder):
        options = RolloutOptions(
            max_concurrent_reconciles=args.workers,
            max_concurrent_changes=args.max_concurrent_changes,
            poll_interval=args.poll_interval,
        )
        metrics = PrometheusReader()
        rollout.setup(manager, recorder, metrics, _guard(manager, recorder), options)
        try:
            await manager.start()
        finally:
            await metrics.close()


def run_guard(args: argparse.Namespace) -> int:
    configure()
    return signals.run(_guard_service(args))


async def _guard_service(args: argparse.Namespace) -> None:
    async with _manager(args, "guard") as (manager, recorder):
        guard.setup(
            manager,
            recorder,
            host=args.bind_address,
            port=args.port,
            cert_file=args.tls_cert_file,
            key_file=args.tls_key_file,
        )
        await manager.start()


def run_probe(args: argparse.Namespace) -> int:
    configure()
    return signals.run(_probe(args))


async def _probe(args: argparse.Namespace) -> None:
    """The pod-creation probe, a process of its own: what it measures must not share a
    process (and its event loop) with the operators whose changes it judges."""
    async with _manager(args, "probe") as (manager, _):
        # It may only get Secrets (its kubeconfigs), never list or watch them.
        clusters = business_clusters(
            manager, qps=args.cluster_qps, burst=int(args.cluster_qps * 2), watch_secrets=False
        )
        options = probe.ProbeOptions(
            period=args.period,
            timeout=args.timeout,
            concurrency=args.concurrency,
            image=args.image,
        )
        probe.setup(manager, clusters, options)
        await manager.start()


def _guard(manager: Manager, recorder: EventRecorder, *, machines: bool = True) -> LocalGuard:
    """The guard this operator asks before its risky actions (RiskPolicies from the manager's
    cache; permissions: config/rbac/guard-client.yaml). With ``machines`` (an operator that
    watches Machines anyway), policies' maxUnavailablePercent counts them."""
    requester = f"{recorder.controller} ({recorder.instance})"
    health = MachineHealth(manager.cache.informer(MACHINES).store) if machines else None
    return LocalGuard.on(manager.cache, requester, recorder=recorder, health=health)


@contextlib.asynccontextmanager
async def _manager(
    args: argparse.Namespace, name: str
) -> AsyncIterator[tuple[Manager, EventRecorder]]:
    """A manager for operator ``name``: client, optional leader election, health server."""
    config = ClientConfig.load(args.kubeconfig, qps=args.qps, burst=int(args.qps * 2))
    identity = new_identity()
    async with Client(config) as client:
        election = (
            LeaderElectionConfig(args.namespace, f"kokpit-{name}-operator", identity)
            if args.leader_elect
            else None
        )
        manager = Manager(
            client,
            ManagerOptions(
                leader_election=election,
                health_host=args.health_bind_address,
                health_port=args.health_port,
            ),
        )
        recorder = EventRecorder(client, f"kokpit.io/{name}-operator", identity)
        try:
            yield manager, recorder
        finally:
            await recorder.close()  # the Events still waiting, before the client closes
