"""Real nodes of the local meta-cluster: a kubelet, containerd and kube-proxy per node.

KWOK nodes run no containers; a real node does, so control planes can run as real pods. Each
real node ``kokpit-real-<i>`` is three supervised processes (recorded in ``state.json`` like
the control plane, so ``down`` finds them even after a killed ``up``):

- a private **containerd** (Debian's package) with its own root, state, sockets and CNI
  config under the data directory, ``restrict_oom_score_adj`` (this machine's bounding set
  lacks CAP_SYS_RESOURCE, so a negative oom_score_adj would fail every sandbox) and a local
  pause image as ``sandbox_image``: there is no registry, images are OCI archives imported
  with ``ctr`` (the pause image, and every ``*.tar`` in the release's ``images/``);
- a **kubelet** (cgroupfs, cgroup v1 allowed, its own ``cgroupRoot``, ports, root and
  certificate dirs), authenticated by a client certificate ``system:node:<name>`` from the
  local PKI, serving with webhook authentication and authorization against the meta API
  server, which reaches it as ``kube-apiserver-kubelet-client``;
- **kube-proxy** in iptables mode as ``system:kube-proxy``, with conntrack sysctls left alone
  and ``localhostNodePorts`` off (so ``route_localnet`` is not touched).

Pods get addresses from a bridge network with host-local IPAM on a private /24 of
:data:`POD_SUBNETS` (the "slot": the first free one, which also names the bridge and the
cgroup root, so two meta-clusters' nodes can coexist). Every node carries the label
:data:`LABEL` and the taint :data:`TAINT`, so only pods meant for a real node land on it.

Before anything starts, :func:`up` records the machine's state (:func:`kokpit.local.host.
snapshot`); :func:`down` stops the processes, kills every container, and puts the machine
back: mounts, network namespaces, the bridge, the chains, cgroups, sysctls and directories.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kokpit.local import host, images
from kokpit.local.assets import Assets, AssetsError
from kokpit.local.components import SERVICE_CIDR, Component, Health, Layout, Settings
from kokpit.local.kubectl import Kubectl
from kokpit.local.supervisor import Supervisor
from kokpit.pki import CLIENTS, PKI, Identity, kubeconfig

#: Label of every real node: a pod meant for one selects it.
LABEL = "kokpit.io/real-node"
#: Taint of every real node: a pod meant for one tolerates it (KWOK's pods never land there).
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
#: Where the slots' pod subnets come from: ``10.88.<slot>.0/24``. Apart from KWOK's pod range
#: (10.64.0.0/16) and the Service range (10.96.0.0/16).
POD_SUBNETS = "10.88.0.0/16"
#: The meta-cluster's DNS Service address (the first ten of the Service range are reserved
#: for the kubernetes Service and DNS, as in kubeadm).
CLUSTER_DNS = str(ipaddress.ip_network(SERVICE_CIDR)[10])
CLUSTER_DOMAIN = "cluster.local"
#: kube-apiserver's client identity towards kubelets (bound to ``system:kubelet-api-admin``).
APISERVER_KUBELET_CLIENT = Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client")
KUBE_PROXY = Identity("kube-proxy", "system:kube-proxy")
PAUSE_IMAGE = "kokpit.local/pause:kokpit"
#: Host tools a real node needs (Debian packages: containerd, runc,
#: containernetworking-plugins, iptables, conntrack; ``make host-deps`` installs them).
TOOLS = ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "iptables", "conntrack", "ip")
CNI_BIN_DIR = Path("/usr/lib/cni")
#: A unix socket's path must fit in 107 bytes: containerd's socket gets ``.ttrpc`` appended,
#: and the kubelet makes sockets such as ``pod-resources/<10 digits>`` in its root dir.
MAX_SOCKET_PATH = 100
#: ``device-plugins/kubelet.sock`` below the root must fit in 107 bytes.
MAX_KUBELET_ROOT = 79
#: The real nodes' directory under the data directory (short, see :data:`MAX_KUBELET_ROOT`).
NODES_DIR = "real"
STATE_KEY = "real_nodes"
#: The machine's state before the first real node started (:func:`kokpit.local.host.snapshot`).
HOST_KEY = "real_node_host"
#: Where the kubelet links container logs (a fixed path in the kubelet).
CONTAINER_LOGS = Path("/var/log/containers")


class RealNodeError(RuntimeError):
    """A real node cannot be started; the message says what is missing."""


def identity(name: str) -> Identity:
    """A kubelet's client identity, as the Node authorizer would expect it."""
    return Identity(f"node-{name}", f"system:node:{name}", ("system:nodes",))


def node_name(index: int) -> str:
    return f"kokpit-real-{index}"


@dataclass(frozen=True)
class NodePaths:
    """Where one real node keeps its files: configs at the top, everything a run leaves
    (containerd's root, the kubelet's root, pod logs, IPAM) under ``run/``, wiped by down."""

    dir: Path

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def socket(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.dir / "containerd.toml"

    @property
    def cni_conf(self) -> Path:
        return self.dir / "cni"

    @property
    def kubelet_config(self) -> Path:
        return self.dir / "kubelet.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.dir / "kubelet.kubeconfig"

    @property
    def proxy_config(self) -> Path:
        return self.dir / "kube-proxy.yaml"

    @property
    def proxy_kubeconfig(self) -> Path:
        return self.dir / "kube-proxy.kubeconfig"

    @property
    def manifests(self) -> Path:
        """The kubelet's static pod directory."""
        return self.dir / "manifests"

    @property
    def kubelet_root(self) -> Path:
        return self.run / "k"  # short: the kubelet's unix sockets live below it

    @property
    def pod_logs(self) -> Path:
        return self.run / "pod-logs"


@dataclass(frozen=True)
class RealNode:
    """One real node's choices, kept in ``state.json`` so down can undo them."""

    name: str
    dir: str
    slot: int
    node_ip: str
    kubelet_port: int
    kubelet_healthz_port: int
    proxy_healthz_port: int
    proxy_metrics_port: int
    containerd_metrics_port: int

    @property
    def paths(self) -> NodePaths:
        return NodePaths(Path(self.dir))

    @property
    def subnet(self) -> str:
        return f"10.88.{self.slot}.0/24"

    @property
    def bridge(self) -> str:
        return f"kokpit{self.slot}"

    @property
    def cgroup(self) -> str:
        return f"kokpit-{self.slot}"

    def process(self, component: str) -> str:
        return f"{self.name}.{component}"


def apiserver_flags(layout: Layout, address: str) -> dict[str, str]:
    """kube-apiserver's flags when real nodes run.

    - Pods reach it: it listens on every address and advertises ``address`` (this machine's,
      :func:`~kokpit.local.host.node_ip`), so the ``kubernetes`` Service's endpoint is one a
      pod can route to (a loopback one is not) and an operator in a pod finds it as any
      in-cluster client does. Without real nodes it stays on loopback only.
    - It reaches kubelets by InternalIP (a real node's name does not resolve), with a client
      certificate the kubelets' webhook authorizer checks.
    """
    pki = layout.pki
    return {
        "bind-address": "0.0.0.0",
        "advertise-address": address,
        "endpoint-reconciler-type": "lease",
        "kubelet-preferred-address-types": "InternalIP,Hostname",
        "kubelet-client-certificate": str(pki.client_cert(APISERVER_KUBELET_CLIENT)),
        "kubelet-client-key": str(pki.client_key(APISERVER_KUBELET_CLIENT)),
    }


def prepare(layout: Layout, settings: Settings, count: int) -> Settings:
    """Issue the real nodes' certificates and a serving certificate valid for this machine's
    address (before kube-apiserver starts: it reads them), and return ``settings`` with
    :func:`apiserver_flags` added."""
    address = host.node_ip()
    node_pki(layout, count, address).ensure()
    flags = {name: dict(values) for name, values in settings.flags.items()}
    flags["kube-apiserver"] = {
        **apiserver_flags(layout, address),
        **flags.get("kube-apiserver", {}),
    }
    return dataclasses.replace(settings, flags=flags)


def node_pki(layout: Layout, count: int, address: str) -> PKI:
    extra = (APISERVER_KUBELET_CLIENT, KUBE_PROXY, *(identity(node_name(i)) for i in range(count)))
    return dataclasses.replace(
        layout.pki, clients=(*CLIENTS, *extra), extra_ips=(*layout.pki.extra_ips, address)
    )


def up(
    layout: Layout,
    supervisor: Supervisor,
    assets: Assets,
    count: int,
    *,
    server: str,
    settings: Settings,
    progress: Callable[[str], None],
) -> None:
    """Start ``count`` real nodes and wait until each is Ready (the control plane runs)."""
    check_host(assets)
    cleanup(layout, supervisor)  # whatever an earlier run that was killed left behind
    before = host.snapshot()
    if "KUBE-SERVICES" in before["chains"].get("iptables/nat", []):
        raise RealNodeError(
            "another kube-proxy's chains (KUBE-SERVICES) are on this machine: two kube-proxies "
            "would rewrite each other's rules; stop the other meta-cluster's real nodes first"
        )
    supervisor.update(**{HOST_KEY: before})
    kubectl = Kubectl(assets.bin("kubectl"), layout.kubeconfig)
    kubectl.apply(rbac([node_name(i) for i in range(count)]))
    pki = node_pki(layout, count, host.node_ip())
    pause = images.write_image(
        layout.root / NODES_DIR / "pause.tar",
        name=PAUSE_IMAGE,
        files={"/pause": assets.bin("pause")},
        entrypoint=["/pause"],
        user="65535:65535",
    )
    archives = [pause, *sorted(assets.images.glob("*.tar"))]
    nodes: list[RealNode] = []
    taken: set[int] = set()
    for index in range(count):
        node = plan(layout, index, taken)
        taken.add(node.slot)
        nodes.append(node)
        supervisor.update(**{STATE_KEY: [dataclasses.asdict(n) for n in nodes]})
        started = time.monotonic()
        start_node(node, supervisor, assets, pki, server, archives, settings)
        wait_ready(kubectl, node.name, settings.start_timeout_s)
        progress(f"  {node.name:<24} Ready in {time.monotonic() - started:4.1f} s")


def check_host(assets: Assets) -> None:
    missing = [t for t in TOOLS if shutil.which(t, path=PATH) is None]
    if not CNI_BIN_DIR.joinpath("bridge").exists():
        missing.append(f"{CNI_BIN_DIR}/bridge (containernetworking-plugins)")
    if missing:
        raise RealNodeError(
            f"a real node needs {', '.join(missing)}: install the Debian packages containerd, "
            "runc, containernetworking-plugins, iptables and conntrack (`make host-deps`)"
        )
    lacking = [n for n in ("kubelet", "kube-proxy", "pause") if not assets.bin(n).is_file()]
    if lacking:
        raise AssetsError(
            f"{assets.root} lacks {', '.join(lacking)}: run `kokpit local build` to add them"
        )


PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def plan(layout: Layout, index: int, taken: set[int]) -> RealNode:
    """Choose a free slot (subnet, bridge, cgroup) and free ports for node ``index``."""
    paths = NodePaths(layout.root / NODES_DIR / str(index))
    if len(str(paths.socket)) > MAX_SOCKET_PATH or len(str(paths.kubelet_root)) > MAX_KUBELET_ROOT:
        raise RealNodeError(
            f"the data directory {layout.root} is too long for the unix sockets of a real node "
            f"(in {paths.kubelet_root}, at most {MAX_KUBELET_ROOT} characters); "
            "use a shorter --data-dir"
        )
    routed = host.routed_subnets()
    links = host.link_names()
    for slot in range(256):
        candidate = RealNode(node_name(index), str(paths.dir), slot, "", 0, 0, 0, 0, 0)
        if (
            slot not in taken
            and candidate.subnet not in routed
            and candidate.bridge not in links
            and not (host.CGROUP_ROOT / "memory" / candidate.cgroup).exists()
        ):
            break
    else:
        raise RealNodeError("no free pod subnet in 10.88.0.0/16 for a real node")
    ports = free_ports(5)
    return dataclasses.replace(
        candidate,
        node_ip=host.node_ip(),
        kubelet_port=ports[0],
        kubelet_healthz_port=ports[1],
        proxy_healthz_port=ports[2],
        proxy_metrics_port=ports[3],
        containerd_metrics_port=ports[4],
    )


def start_node(
    node: RealNode,
    supervisor: Supervisor,
    assets: Assets,
    pki: PKI,
    server: str,
    archives: list[Path],
    settings: Settings,
) -> None:
    paths = node.paths
    for directory in (paths.dir, paths.run, paths.cni_conf, paths.pod_logs, paths.manifests):
        directory.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(containerd_config(node))
    (paths.cni_conf / "10-kokpit.conflist").write_text(json.dumps(cni_config(node), indent=2))
    paths.kubelet_config.write_text(json.dumps(kubelet_config(node, pki), indent=2))
    paths.proxy_config.write_text(json.dumps(proxy_config(node), indent=2))
    kubeconfig.write(
        paths.kubelet_kubeconfig,
        server=server,
        pki=pki,
        who=identity(node.name),
        cluster_name="meta",
    )
    kubeconfig.write(
        paths.proxy_kubeconfig, server=server, pki=pki, who=KUBE_PROXY, cluster_name="meta"
    )
    host.create_cgroup(node.cgroup)

    containerd = Component(
        node.process("containerd"),
        ["/usr/bin/containerd", f"--config={paths.containerd_config}"],
        Health(f"http://127.0.0.1:{node.containerd_metrics_port}/v1/metrics"),
    )
    supervisor.start(containerd)
    supervisor.wait_healthy(containerd, settings.start_timeout_s)
    for archive in archives:
        import_image(paths.socket, archive, unpack=archive == archives[0])

    kubelet = Component(
        node.process("kubelet"),
        [
            str(assets.bin("kubelet")),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={paths.kubelet_kubeconfig}",
            f"--root-dir={paths.kubelet_root}",
            f"--cert-dir={paths.run / 'kubelet-certs'}",
            f"--hostname-override={node.name}",
            f"--node-ip={node.node_ip}",
            f"--node-labels={LABEL}=true",
            "--v=1",
        ],
        Health(f"http://127.0.0.1:{node.kubelet_healthz_port}/healthz"),
    )
    supervisor.start(kubelet)
    supervisor.wait_healthy(kubelet, settings.start_timeout_s)

    proxy = Component(
        node.process("kube-proxy"),
        [str(assets.bin("kube-proxy")), f"--config={paths.proxy_config}", "--v=1"],
        Health(f"http://127.0.0.1:{node.proxy_healthz_port}/livez"),
    )
    supervisor.start(proxy)
    supervisor.wait_healthy(proxy, settings.start_timeout_s)


def import_image(socket_path: Path, archive: Path, *, unpack: bool = True) -> None:
    """``ctr -n k8s.io images import``: the namespace the CRI plugin reads images from.
    Without ``unpack`` the layers are unpacked only when a container first uses the image
    (containerd's CRI plugin does it then): an image no pod uses costs one copy, not two."""
    unpacking = [] if unpack else ["--no-unpack"]
    command = ["ctr", f"--address={socket_path}", "-n", "k8s.io", "images", "import"]
    proc = subprocess.run(
        [*command, *unpacking, str(archive)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": PATH},
    )
    if proc.returncode != 0:
        raise RealNodeError(f"importing {archive} failed: {proc.stderr.strip()[-500:]}")


def load_image(supervisor: Supervisor, archive: Path) -> list[str]:
    """Import ``archive`` into every running real node of a meta-cluster (for an image made
    after ``up``; those in the release's ``images/`` are imported at ``up``). Returns the
    nodes it was imported into."""
    nodes = [RealNode(**n) for n in supervisor.state().get(STATE_KEY) or []]
    for node in nodes:
        import_image(node.paths.socket, archive)
    return [node.name for node in nodes]


def wait_ready(kubectl: Kubectl, name: str, timeout_s: float) -> None:
    path = 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if kubectl.run("get", "node", name, "-o", path) == "True":
                return
        except RuntimeError:
            pass  # not registered yet
        time.sleep(0.3)
    raise RealNodeError(f"node {name} not Ready within {timeout_s:.0f} s")


def rbac(names: list[str]) -> list[dict[str, Any]]:
    """Bindings of the real nodes' identities to the roles kubeadm gives them (the local API
    server authorizes with RBAC only; there is no Node authorizer)."""

    def binding(name: str, role: str, users: list[str]) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users
            ],
        }

    return [
        binding("kokpit:real-nodes", "system:node", [identity(n).user for n in names]),
        binding("kokpit:real-node-proxier", "system:node-proxier", [KUBE_PROXY.user]),
        binding(
            "kokpit:apiserver-kubelet-client",
            "system:kubelet-api-admin",
            [APISERVER_KUBELET_CLIENT.user],
        ),
    ]


def containerd_config(node: RealNode) -> str:
    paths = node.paths
    run = paths.run / "containerd"
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return f"""\
# Written by kokpit for real node {node.name}: everything under {paths.dir}.
version = 2
root = "{run / "root"}"
state = "{run / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{paths.socket}"

[ttrpc]
  address = "{paths.socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = "127.0.0.1:{node.containerd_metrics_port}"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{run / "opt"}"
  {cri}
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    # Sandboxes' network namespaces under our state dir, not in the machine's /run/netns.
    netns_mounts_under_state_dir = true
    {cri[:-1]}.cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{paths.cni_conf}"
      max_conf_num = 1
    {cri[:-1]}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      {cri[:-1]}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        {cri[:-1]}.containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "{run / "runc"}"
"""


def cni_config(node: RealNode) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": node.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": node.bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(node.paths.run / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: RealNode, pki: PKI) -> dict[str, Any]:
    paths = node.paths
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.node_ip,
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": node.kubelet_healthz_port,
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{node.cgroup}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(paths.pod_logs),
        "staticPodPath": str(paths.manifests),
        "volumePluginDir": str(paths.run / "volume-plugins"),
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "registerWithTaints": [TAINT],
        # kube-proxy makes the chains it needs; the kubelet's own are not needed here.
        "makeIPTablesUtilChains": False,
        # Imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
            "nodefs.inodesFree": "2%",
        },
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def proxy_config(node: RealNode) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "hostnameOverride": node.name,
        "clientConnection": {"kubeconfig": str(node.paths.proxy_kubeconfig)},
        "clusterCIDR": node.subnet,
        "healthzBindAddress": f"127.0.0.1:{node.proxy_healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{node.proxy_metrics_port}",
        # Zero leaves the machine's conntrack sysctls as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # NodePorts on 127.0.0.1 would need net.ipv4.conf.all.route_localnet=1.
        "iptables": {"localhostNodePorts": False},
        "nodePortAddresses": ["primary"],
    }


def down(layout: Layout, supervisor: Supervisor) -> None:
    """Stop every real node and put the machine back as :func:`up` found it."""
    cleanup(layout, supervisor)


def cleanup(layout: Layout, supervisor: Supervisor) -> None:
    """Undo what the real nodes recorded in ``state.json`` did; harmless when nothing is."""
    state = supervisor.state()
    recorded = [RealNode(**n) for n in state.get(STATE_KEY) or []]
    before: Mapping[str, Any] | None = state.get(HOST_KEY)
    if not recorded and before is None:
        return
    netns: set[str] = set()
    unreachable = False
    for node in recorded:
        supervisor.stop(node.process("kube-proxy"))
        supervisor.stop(node.process("kubelet"))
        found = kill_containers(node.paths.socket)
        unreachable |= found is None
        netns |= found or set()
        supervisor.stop(node.process("containerd"), timeout=20.0)
        stop_shims(node.paths.socket)
        Path(f"{node.paths.socket}.ttrpc").unlink(missing_ok=True)
    if unreachable and before is not None and host.NETNS.is_dir():
        # A containerd that died cannot say which namespaces its sandboxes used: then every
        # CNI namespace made since up is taken for ours.
        netns |= {
            n.name
            for n in host.NETNS.iterdir()
            if n.name.startswith("cni-") and n.name not in before["netns"]
        }
    failures: list[str] = []

    def attempt(what: str, step: Callable[[], object]) -> None:
        """Run one step of the cleanup; a failure is reported at the end, after the others
        ran (a mount that will not go must not keep the chains or sysctls as they are)."""
        try:
            step()
        except (OSError, subprocess.SubprocessError, host.HostError) as e:
            failures.append(f"{what}: {e}")

    runs = [node.paths.run for node in recorded]
    attempt("unmount", lambda: host.unmount_under(runs, [str(host.NETNS / n) for n in netns]))
    attempt("network namespaces", lambda: host.remove_netns(netns))
    for node in recorded:
        attempt(f"bridge {node.bridge}", functools.partial(host.delete_link, node.bridge))
        attempt(f"cgroup {node.cgroup}", functools.partial(host.remove_cgroup, node.cgroup))
        logs = functools.partial(host.remove_log_links, CONTAINER_LOGS, node.paths.pod_logs)
        attempt("container log links", logs)
        run = str(node.paths.run)
        if not any(m == run or m.startswith(run + "/") for m in host.mounts()):
            shutil.rmtree(node.paths.run, ignore_errors=True)
    if before is not None:
        attempt("iptables chains", lambda: host.delete_new_chains(before["chains"]))
        attempt("sysctls", lambda: host.restore_sysctls(before["sysctls"]))
        attempt("directories", lambda: host.remove_new_directories(before["directories"]))
    if failures:  # state.json keeps the record, so the next down tries again
        raise RealNodeError("the real nodes left changes behind: " + "; ".join(failures))
    supervisor.update(**{STATE_KEY: [], HOST_KEY: None})


def kill_containers(socket_path: Path) -> set[str] | None:
    """Kill every task of a node's containerd and delete it (unmounting its root
    filesystem); returns the network namespaces its sandboxes used, None if containerd
    does not answer."""

    def ctr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", f"--address={socket_path}", "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            env={"PATH": PATH},
        )

    listed = ctr("containers", "ls", "-q") if socket_path.exists() else None
    if listed is None or listed.returncode != 0:
        return None
    netns: set[str] = set()
    for cid in listed.stdout.split():
        info = ctr("containers", "info", cid)
        if info.returncode == 0:
            spec = json.loads(info.stdout).get("Spec") or {}
            for ns in (spec.get("linux") or {}).get("namespaces") or []:
                path = ns.get("path", "")
                if ns.get("type") == "network" and path.startswith(
                    ("/var/run/netns/", "/run/netns/")
                ):
                    netns.add(Path(path).name)

    def tasks() -> list[str]:
        return [line.split()[0] for line in ctr("tasks", "ls").stdout.splitlines()[1:] if line]

    killed = tasks()
    for task in killed:
        ctr("tasks", "kill", "--signal", "SIGKILL", task)
    # containerd's CRI plugin deletes a task once it sees it exit; delete what it has not yet.
    deadline = time.monotonic() + 10
    while (left := [t for t in tasks() if t in killed]) and time.monotonic() < deadline:
        for task in left:
            ctr("tasks", "delete", task)
        time.sleep(0.1)
    return netns


def stop_shims(socket_path: Path) -> None:
    """Kill the shims a node's containerd started (they outlive it; each names its
    containerd's socket in ``-address``)."""
    wanted = str(socket_path)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and wanted.encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def free_ports(count: int) -> list[int]:
    """Ports free on every address (the kubelet listens on the node IP, not loopback)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
