"""The command line of each local control-plane component, as pure functions.

Flags follow what envtest and kubeadm use, trimmed to one machine: everything listens on
127.0.0.1 only (kube-apiserver also on this machine's address when real nodes run, so their
pods reach it: :func:`kokpit.local.realnode.apiserver_flags`), and every component
authenticates to kube-apiserver with its own client certificate (see :mod:`kokpit.pki`).
Each function returns a :class:`Component`: the argv, and the URL that says it is healthy.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kokpit.local.assets import Assets
from kokpit.pki import PKI

#: Service ClusterIP range of the meta-cluster; its first address is in the serving certificate.
SERVICE_CIDR = "10.96.0.0/16"
#: Pod IPs kwok hands out to simulated pods.
POD_CIDR = "10.64.0.0/16"
#: kwok marks the nodes it manages with this annotation.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def choose(cls, previous: Mapping[str, int]) -> Ports:
        """Reuse ``previous`` ports that are free now; pick free loopback ports for the rest."""
        taken: set[int] = set()
        chosen: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            port = previous.get(f.name)
            if port is None or port in taken or not _port_free(port):
                port = _free_port(taken)
            taken.add(port)
            chosen[f.name] = port
        return cls(**chosen)


@dataclass(frozen=True)
class Layout:
    """Where a local cluster keeps its files under its data directory."""

    root: Path

    @property
    def pki(self) -> PKI:
        return PKI(self.root / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig, for people and tests."""
        return self.root / "kubeconfig"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def cert_dir(self, name: str) -> Path:
        return self.root / "serving" / name

    @property
    def state(self) -> Path:
        return self.root / "state.json"


@dataclass(frozen=True)
class Health:
    """How to ask a component whether it is healthy."""

    url: str
    #: "none" for plain HTTP, "self-signed" for a component's own serving certificate, and
    #: "client-cert" for kube-apiserver (verified against our CA, with the admin certificate).
    tls: str = "none"
    #: How long one probe may take.
    timeout_s: float = 2.0

    def probing(self, path: str, timeout_s: float) -> Health:
        """The same endpoint, asked on another path (``/livez`` instead of ``/readyz``)."""
        base = self.url.split("/", 3)[:3]
        return dataclasses.replace(self, url="/".join(base) + path, timeout_s=timeout_s)


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    health: Health


Builder = Callable[["Assets", "Layout", "Ports", "Settings"], "Component"]


@dataclass(frozen=True)
class Settings:
    """Tunables of the local control plane."""

    #: How long the node lifecycle controller waits for a heartbeat before it marks a node
    #: NotReady/Unknown. Shorter than the upstream 40-50 s so faults show quickly here; kwok
    #: renews node Leases every 10 s, so 20 s still tolerates one missed renewal.
    node_monitor_grace_period_s: int = 20
    #: Trade durability on power loss for speed; a clean down/up keeps every object.
    etcd_unsafe_no_fsync: bool = True
    #: How long one component may take to become healthy before ``up`` gives up.
    start_timeout_s: float = 90.0
    service_cidr: str = SERVICE_CIDR
    #: The range kube-controller-manager gives nodes their podCIDR from; None leaves node IPAM
    #: off (the meta-cluster: KWOK hands out pod IPs from :data:`POD_CIDR` itself).
    pod_cidr: str | None = None
    #: Extra flags per component name (``{"kube-apiserver": {"v": "2"}}``), overriding defaults.
    flags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def etcd(assets: Assets, layout: Layout, ports: Ports, settings: Settings) -> Component:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    argv = [
        str(assets.bin("etcd")),
        "--name=kokpit",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=kokpit={peer}",
        "--log-level=warn",
    ]
    if settings.etcd_unsafe_no_fsync:
        argv.append("--unsafe-no-fsync=true")
    return Component("etcd", argv, Health(f"{client}/health"))


def apiserver(assets: Assets, layout: Layout, ports: Ports, settings: Settings) -> Component:
    pki = layout.pki
    argv = [
        str(assets.bin("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=false",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={settings.service_cidr}",
        "--allow-privileged=true",
        # The advertise address is loopback, which the kubernetes Service's endpoints may not
        # hold; nothing in a meta-cluster without real pods needs that endpoint (with real
        # nodes, kokpit.local.realnode.apiserver_flags gives it one a pod can reach).
        "--endpoint-reconciler-type=none",
        "--profiling=false",
    ]
    return Component(
        "kube-apiserver",
        argv,
        Health(f"https://127.0.0.1:{ports.apiserver}/readyz", tls="client-cert"),
    )


def controller_manager(
    assets: Assets, layout: Layout, ports: Ports, settings: Settings
) -> Component:
    pki = layout.pki
    kubeconfig = layout.component_kubeconfig("controller-manager")
    argv = [
        str(assets.bin("kube-controller-manager")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={layout.cert_dir('controller-manager')}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.sa_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--node-monitor-grace-period={settings.node_monitor_grace_period_s}s",
        "--node-monitor-period=2s",
        "--profiling=false",
    ]
    if settings.pod_cidr is not None:
        ipam = node_ipam_flags(settings.pod_cidr, settings.service_cidr)
        argv += [f"--{name}={value}" for name, value in ipam.items()]
    return Component(
        "kube-controller-manager",
        argv,
        Health(f"https://127.0.0.1:{ports.controller_manager}/healthz", tls="self-signed"),
    )


def node_ipam_flags(pod_cidr: str, service_cidr: str) -> dict[str, str]:
    """kube-controller-manager's flags to give each new node a podCIDR from ``pod_cidr`` (what
    a CNI plugin reads to address the node's pods), leaving out ``service_cidr``. The same in
    every runtime, so a Cluster's ``spec.network.podCIDR`` means one thing."""
    return {
        "allocate-node-cidrs": "true",
        "cluster-cidr": pod_cidr,
        "service-cluster-ip-range": service_cidr,
    }


def scheduler(assets: Assets, layout: Layout, ports: Ports, settings: Settings) -> Component:
    kubeconfig = layout.component_kubeconfig("scheduler")
    argv = [
        str(assets.bin("kube-scheduler")),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={layout.cert_dir('scheduler')}",
        "--leader-elect=false",
        "--profiling=false",
    ]
    return Component(
        "kube-scheduler",
        argv,
        Health(f"https://127.0.0.1:{ports.scheduler}/healthz", tls="self-signed"),
    )


def kwok(assets: Assets, layout: Layout, ports: Ports, settings: Settings) -> Component:
    argv = [
        str(assets.bin("kwok")),
        f"--kubeconfig={layout.component_kubeconfig('kwok')}",
        f"--config={assets.kwok_stages}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{ports.kwok}",
        f"--cidr={POD_CIDR}",
        "--node-ip=127.0.0.1",
        # Renew each node's Lease like a kubelet does (every quarter of the duration).
        "--node-lease-duration-seconds=40",
    ]
    return Component("kwok", argv, Health(f"http://127.0.0.1:{ports.kwok}/healthz"))


def with_flags(component: Component, flags: Mapping[str, str]) -> Component:
    """``component`` with ``--name=value`` flags added, replacing any default of the same name."""
    if not flags:
        return component
    names = {f"--{name}" for name in flags}
    kept = [a for a in component.argv[1:] if a.split("=", 1)[0] not in names]
    extra = [f"--{name}={value}" for name, value in sorted(flags.items())]
    return Component(component.name, [component.argv[0], *kept, *extra], component.health)


def build(
    make: Builder, assets: Assets, layout: Layout, ports: Ports, settings: Settings
) -> Component:
    """Build a component's command line, with the settings' extra flags for it applied."""
    component = make(assets, layout, ports, settings)
    return with_flags(component, settings.flags.get(component.name, {}))


#: Start order; each waits for the one before it to be healthy.
ALL: tuple[Builder, ...] = (etcd, apiserver, controller_manager, scheduler, kwok)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in taken:
            return port
