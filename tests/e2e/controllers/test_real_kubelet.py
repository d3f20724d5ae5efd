"""A real kubelet joins a business cluster by TLS bootstrap, end to end.

The business cluster is made by the Cluster-Operator (``process`` runtime: its API server
listens on this machine's loopback, which the host's kubelet reaches). The host is a real sshd
listening on this machine's own address (a kubelet refuses a loopback node IP). Its
MachinePackageVersion installs a private containerd and a real kubelet
(:mod:`kokpit.local.nodepackages`). The Machine-Operator writes the bootstrap
kubeconfig, installs the packages, waits for the kubelet's own Node and adopts it; the gate
passes, the taint goes, a real pod runs; the Machine's delete drains the node and the package
removal leaves the machine as it was.

It starts a real kubelet and containerd (marked ``real_node_alone``: before the session's real
node, as it checks the machine is left as found)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from fixtures.business import BusinessCluster
from kokpit.api.v1alpha1 import MACHINE_PACKAGE_VERSIONS, MACHINES
from kokpit.controllers.machine.join import BOOTSTRAP_KUBECONFIG
from kokpit.local import Assets, Kubectl, LocalCluster
from kokpit.local import nodepackages as node_packages
from kokpit.local.images import write_image
from kokpit.providers.machine.sshd import SimulatedHost, start_host_at
from kokpit.runtime import ApiError, Client, ClientConfig, NotFound, Resource
from kokpit.runtime.resources import CONFIGMAPS, NODES, PODS, SECRETS
from tests.e2e.controllers.test_machine_operator import Operator, condition, package_version
from tests.e2e.rbac import apply_rbac, operator_identity, service_account
from tests.e2e.support import until

pytestmark = [
    pytest.mark.slow,
    # A real kubelet and containerd, and a check that the machine is left as found: before any
    # other real node of the session runs.
    pytest.mark.real_node_alone,
    pytest.mark.usefixtures("kokpit_crds", "condition_reports_policy"),
]
NS = "real-join-e2e"
NAME = "real-host"
REPORTER = "network-operator"
GATE = "example.com/NetworkReady"
#: Distinct from the realnode helper's (10.88.x.0/24, its own bridge and cgroup root).
BRIDGE, SUBNET, CGROUP_ROOT = "kokpitj0", "10.89.77.0/24", "/kokpit-join"
PAUSE, WORKLOAD = "kokpit.local/pause:join", "kokpit.local/sleeper:join"
CSRS = Resource(
    "certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", False
)
Object = dict[str, Any]


def node_ip() -> str:
    """This machine's address for other hosts: the source of the default route."""
    out = subprocess.run(
        ["ip", "-j", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True
    )
    return str(json.loads(out.stdout)[0]["prefsrc"])


def machine_state(root: Path) -> dict[str, Any]:
    """What a real node may change on the machine, to compare before and after."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    chains = {
        f"{b}/{t}": sorted(
            line.split()[0] for line in run(f"{b}-save", "-t", t).splitlines() if line[:1] == ":"
        )
        for b in ("iptables", "ip6tables")
        if shutil.which(f"{b}-save")
        for t in ("filter", "nat", "mangle")
    }
    sysctls = {
        k: Path(f"/proc/sys/{k}").read_text().strip()
        for k in ("net/ipv4/ip_forward", *node_packages.TUNABLES.split())
    }
    mounts = sorted(line.split()[1] for line in Path("/proc/mounts").read_text().splitlines())
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*{CGROUP_ROOT}") if p.is_dir())
    links = sorted(link["ifname"] for link in json.loads(run("ip", "-j", "link")))
    netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else None
    ours = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(root) in _cmdline(pid)]
    return {
        "chains": chains,
        "sysctls": sysctls,
        "mounts": mounts,
        "cgroups": cgroups,
        "links": links,
        "netns": netns,
        "processes": ours,
        "log-links": sorted(
            p.name
            for p in Path("/var/log/containers").glob("*")
            if p.is_symlink() and os.readlink(p).startswith(str(root))
        ),
    }


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def real_host() -> Iterator[SimulatedHost]:
    """An sshd on this machine's address, its root short enough for containerd's sockets."""
    directory = Path(tempfile.mkdtemp(prefix="kj-", dir="/tmp"))
    host = start_host_at(directory, node_ip())
    try:
        yield host
    finally:
        host.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def operator(
    local_cluster: LocalCluster, kubectl: Kubectl, biz: BusinessCluster
) -> AsyncIterator[Operator]:
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    identity = operator_identity(kubectl, admin, "machine-operator", [NS])
    op = Operator(identity, executors=("ssh",), kwok_nodes=())
    await op.start()
    yield op
    await op.stop()


@pytest.fixture
async def reporter(kubectl: Kubectl, local_cluster: LocalCluster) -> AsyncIterator[Client]:
    apply_rbac(kubectl, "node-condition-reporter")
    kubectl.run(
        "create",
        "rolebinding",
        f"{REPORTER}-reports",
        "-n",
        NS,
        "--clusterrole=kokpit-node-condition-reporter",
        f"--serviceaccount={NS}:{REPORTER}",
    )
    admin = ClientConfig.from_kubeconfig(local_cluster.kubeconfig)
    async with Client(service_account(kubectl, admin, NS, REPORTER)) as c:
        yield c


def ready(node: Object) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (node.get("status") or {}).get("conditions") or []
    )


def tainted(node: Object) -> bool:
    return any(t["key"] == "kokpit.io/not-ready" for t in node["spec"].get("taints") or [])


async def test_a_real_kubelet_joins_by_tls_bootstrap_runs_a_pod_and_leaves_nothing(
    operator: Operator,
    client: Client,
    business: Client,
    biz: BusinessCluster,
    real_host: SimulatedHost,
    reporter: Client,
    assets: Assets,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = real_host.root
    images = root.parent / "images"
    pause_binary = assets.bin("pause")
    archives = [
        write_image(
            images / "pause.tar", name=PAUSE, files={"/pause": pause_binary}, entrypoint=["/pause"]
        ),
        write_image(
            images / "sleeper.tar",
            name=WORKLOAD,
            files={"/sleep": pause_binary},
            entrypoint=["/sleep"],
        ),
    ]
    kubelet_binary = str(assets.bin("kubelet"))
    before = machine_state(root)
    await client.apply(
        MACHINE_PACKAGE_VERSIONS,
        package_version(
            "real-node",
            node_packages.containerd(
                images=[str(a) for a in archives], sandbox_image=PAUSE, bridge=BRIDGE, subnet=SUBNET
            ),
            node_packages.kubelet(
                version=assets.kubernetes_version,
                binary=kubelet_binary,
                cgroup_root=CGROUP_ROOT,
                port=10370,
                healthz_port=10378,
            ),
        ),
        field_manager="test",
    )
    await client.apply(SECRETS, real_host.ssh_secret(NS, NAME), field_manager="test")
    # The Node as the kubelet registers it, from a watch started before it can exist: a read
    # later may see another writer's list of taints (the node lifecycle controller adds and
    # removes its not-ready taint while the kubelet starts).
    registered = asyncio.create_task(_registered(business, NAME))
    gate = {
        "conditionType": GATE,
        "mode": "Continuous",
        "reporter": {"namespace": NS, "name": REPORTER},
    }
    await client.create(
        MACHINES,
        {
            "apiVersion": "kokpit.io/v1alpha1",
            "kind": "Machine",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "clusterRef": {"name": "biz"},
                "packageVersion": "real-node",
                "address": real_host.address,
                "port": real_host.port,
                "sshSecretRef": {"name": NAME},
                "readinessGates": [gate],
                "nodeLabels": {"kokpit.io/test": "real"},
            },
        },
    )
    pod_created = False
    try:
        # The kubelet's own Node, tainted from its first moment, Ready.
        node = await asyncio.wait_for(registered, 180)
        assert tainted(node), "the kubelet registered with kokpit's taint (--register-with-taints)"
        node = await until(
            "the Node Ready",
            lambda: _if(business.get(NODES, NAME), ready),
            within=120,
            every=0.1,
        )
        ready_at = time.time()
        started = float((root / "var/lib/kokpit-node/kubelet.started").read_text())
        with capsys.disabled():
            print(f"\nkubelet package install → Node Ready: {ready_at - started:.1f} s")
        assert not node["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node")
        addresses = {a["address"] for a in node["status"]["addresses"]}
        assert real_host.address in addresses

        # By TLS bootstrap: the token of the bootstrap kubeconfig asked, the CSR was
        # approved, and the kubelet's client certificate is the cluster CA's.
        bootstrap = json.loads((root / BOOTSTRAP_KUBECONFIG.lstrip("/")).read_text())
        token_id = bootstrap["users"][0]["user"]["token"].split(".")[0]
        ca = x509.load_pem_x509_certificate(
            base64.b64decode(bootstrap["clusters"][0]["cluster"]["certificate-authority-data"])
        )
        csrs = (await business.list(CSRS)).items
        mine = [c for c in csrs if c["spec"]["username"] == f"system:bootstrap:{token_id}"]
        assert mine, [c["spec"]["username"] for c in csrs]
        assert mine[0]["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
        assert any(c["type"] == "Approved" for c in mine[0]["status"]["conditions"])
        client_cert = x509.load_pem_x509_certificate(
            (root / "var/lib/kubelet/pki/kubelet-client-current.pem").read_bytes()
        )
        assert client_cert.subject.rfc4514_string() == f"CN=system:node:{NAME},O=system:nodes"
        client_cert.verify_directly_issued_by(ca)

        # Adopted, not created: the Machine's annotation and labels on the kubelet's Node.
        await until(
            "the Machine adopting its Node",
            lambda: _if(
                client.get(MACHINES, NAME, namespace=NS),
                lambda o: o["status"].get("nodeName") == NAME,
            ),
            within=60,
        )
        node = await business.get(NODES, NAME)
        assert node["metadata"]["annotations"]["kokpit.io/machine"] == f"{NS}/{NAME}"
        assert node["metadata"]["labels"]["kokpit.io/test"] == "real"
        assert tainted(node)

        # A real pod waits for the gate, then runs on the node.
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "on-real-node", "namespace": "default"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": NAME},
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "c", "image": WORKLOAD, "imagePullPolicy": "Never"}],
            },
        }
        await until("the pod created", lambda: _create(business, pod), within=60)
        pod_created = True
        await asyncio.sleep(3)
        waiting = await business.get(PODS, "on-real-node", namespace="default")
        assert not waiting["spec"].get("nodeName"), "scheduled onto a node whose gate is pending"
        value = json.dumps([{"type": GATE, "status": "True", "reason": "Probed", "message": "ok"}])
        await reporter.apply(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": NAME, "namespace": NS},
                "data": {f"{NS}.{REPORTER}": value},
            },
            field_manager=f"reporter-{REPORTER}",
        )
        gate_passed = time.time()
        await until(
            "the taint removed",
            lambda: _if(business.get(NODES, NAME), lambda n: not tainted(n)),
            within=60,
        )
        running = await until(
            "the pod Running",
            lambda: _if(
                business.get(PODS, "on-real-node", namespace="default"),
                lambda p: p["status"].get("phase") == "Running",
            ),
            within=90,
        )
        assert running["spec"]["nodeName"] == NAME
        with capsys.disabled():
            print(f"gate passed → pod Running: {time.time() - gate_passed:.1f} s")
        # What the cleanup below must undo is really there now.
        during = machine_state(root)
        assert during["cgroups"], "the kubelet's cgroup root"
        assert BRIDGE in during["links"]
        assert during["processes"], "kubelet, containerd and shims"
        assert any(m.startswith(str(root)) for m in during["mounts"])
        assert running["status"]["podIP"].startswith("10.89.77.")
        machine = await client.get(MACHINES, NAME, namespace=NS)
        assert condition(machine, "Ready").get("status") == "True"
    finally:
        registered.cancel()
        # Delete: drain (the pod is evicted), remove the packages (kubelet, then containerd,
        # each cleaning up after itself), delete the Node.
        with contextlib.suppress(NotFound):
            await client.delete(MACHINES, NAME, namespace=NS)
        await until(
            "the Machine deleted",
            lambda: _gone(client.get(MACHINES, NAME, namespace=NS)),
            within=240,
            every=0.5,
        )
    if pod_created:
        # Evicted by the drain, and removed by its kubelet before the kubelet was removed.
        with pytest.raises(NotFound):
            await business.get(PODS, "on-real-node", namespace="default")
    with pytest.raises(NotFound):
        await business.get(NODES, NAME)
    after = machine_state(root)
    for key in before:
        assert after[key] == before[key], key


@pytest.fixture
async def business(biz: BusinessCluster) -> AsyncIterator[Client]:
    async with Client(ClientConfig.from_kubeconfig(biz.kubeconfig)) as c:
        yield c


async def _registered(business: Client, name: str) -> Object:
    """The first version of Node ``name``: the one its kubelet created."""
    selector = f"metadata.name={name}"
    listed = await business.list(NODES, field_selector=selector)
    if listed.items:
        raise AssertionError(f"Node {name} exists before its Machine")
    async for event in business.watch(
        NODES, resource_version=listed.resource_version, field_selector=selector
    ):
        if event.type == "ADDED":
            return event.object
    raise AssertionError(f"the watch ended before Node {name} was registered")


async def _if(get: Any, done: Any) -> Object | None:
    obj = await get
    return obj if done(obj) else None


async def _create(business: Client, obj: Object) -> bool:
    try:
        await business.create(PODS, obj, namespace="default")
    except ApiError as e:
        if "serviceaccount" in str(e).lower():  # the default ServiceAccount is not there yet
            return False
        raise
    return True


async def _gone(get: Any) -> bool:
    try:
        await get
    except NotFound:
        return True
    return False
