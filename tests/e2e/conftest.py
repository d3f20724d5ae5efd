"""Fixtures for e2e tests: one real local meta-cluster per session, a fresh namespace per test.

The cluster is started in a temporary data directory, so tests never touch the developer's
own cluster (``~/.local/share/kokpit/local``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fixtures import samples
from fixtures.business import BusinessCluster, business_cluster
from kokpit.local import Assets, Kubectl, KubectlError, LocalCluster, ensure_assets, release
from kokpit.local import nodes as kwok_nodes
from kokpit.runtime import Client, ClientConfig, Resource
from tests.e2e.support import IMAGE_REVISION, IMAGE_SOURCE, install_crds

#: The shared simulated nodes every workload test may schedule onto.
SHARED_NODES = 100


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
        uses_session_node = "real_meta_cluster" in getattr(item, "fixturenames", ())
        if uses_session_node or item.get_closest_marker("real_node_alone"):
            item.add_marker(pytest.mark.real_node)
    # A test that starts real nodes of its own runs before any other real node of the session
    # is started: real nodes share the machine's iptables chains (one kube-proxy at a time).
    alone = [item for item in items if item.get_closest_marker("real_node_alone")]
    items[:] = alone + [item for item in items if item not in alone]


@pytest.fixture(scope="session")
def assets() -> Assets:
    return ensure_assets(release(os.environ.get("KOKPIT_K8S_VERSION")))


@pytest.fixture(scope="session")
def local_cluster(
    assets: Assets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("meta-cluster"))
    cluster.up(assets, progress=lambda _: None)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kubectl(local_cluster: LocalCluster, assets: Assets) -> Kubectl:
    return Kubectl(assets.bin("kubectl"), local_cluster.kubeconfig)


@pytest.fixture(scope="session")
def shared_nodes(kubectl: Kubectl) -> list[str]:
    names = kwok_nodes.ensure_nodes(kubectl, SHARED_NODES)
    kwok_nodes.wait_ready(kubectl, names)
    return names


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"{slug}-{secrets.token_hex(3)}"
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
async def client(local_cluster: LocalCluster) -> AsyncIterator[Client]:
    """A kokpit runtime client with the admin credentials, one per test (one event loop each)."""
    async with Client(ClientConfig.from_kubeconfig(local_cluster.kubeconfig)) as c:
        yield c


@pytest.fixture(scope="session")
def widget_crd(kubectl: Kubectl) -> Resource:
    """The sample Widget CRD (:mod:`fixtures.samples`), installed once."""
    crd = samples.widget_crd()
    kubectl.apply([crd])
    kubectl.wait_established("widgets.test.kokpit.io")
    return samples.WIDGETS


@pytest.fixture(scope="module")
def biz(
    request: pytest.FixtureRequest,
    kubectl: Kubectl,
    assets: Assets,
    local_cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
    kokpit_crds: None,
) -> Iterator[BusinessCluster]:
    """The module's business cluster: Cluster ``biz`` in the module's namespace ``NS`` (made,
    and deleted afterwards, if it does not exist), a ``process``-runtime control plane kept by
    a Cluster-Operator and KWOK nodes, with the module's ``BUSINESS_CLUSTER`` options (see
    :func:`fixtures.business.business_cluster`)."""
    options = getattr(request.module, "BUSINESS_CLUSTER", {})
    workdir = tmp_path_factory.mktemp("biz")
    namespace = request.module.NS
    with business_cluster(
        kubectl, assets, local_cluster.kubeconfig, workdir, namespace, **options
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kokpit_crds(kubectl: Kubectl) -> None:
    """kokpit's CRDs (config/crd), installed once per session."""
    install_crds(kubectl)


# Imported here, not at the top, so the fixture below is one self-contained addition.
from kokpit.providers.machine.sshd import SimulatedHost, start_hosts, stop_hosts  # noqa: E402


@pytest.fixture(scope="session")
def ssh_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SimulatedHost]]:
    """Four simulated hosts (real sshd on 127.0.10.x, see
    :mod:`kokpit.providers.machine.sshd`), shared by the session: a test that stops one must
    start it again."""
    hosts = start_hosts(tmp_path_factory.mktemp("ssh-hosts"), 4)
    try:
        yield hosts
    finally:
        stop_hosts(hosts)


ADMISSION = Path(__file__).parents[2] / "config" / "admission"


@pytest.fixture(scope="session")
def condition_reports_policy(kubectl: Kubectl) -> None:
    """The admission policy of config/admission (a ServiceAccount writes only its own key of a
    Condition ConfigMap), installed once per session and in force when this returns: an
    admin's write of a key is refused (the API server loads a new policy within a second or so)."""
    kubectl.run("apply", "-k", str(ADMISSION))
    name, labels = "kokpit-policy-probe", {"kokpit.io/node-conditions": "true"}
    meta = {"name": name, "namespace": "default", "labels": labels}
    kubectl.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}])
    probe = ["configmap", name, "-n", "default"]
    deadline = time.monotonic() + 30
    try:
        for attempt in itertools.count():
            try:
                kubectl.run("patch", *probe, "-p", json.dumps({"data": {"probe": str(attempt)}}))
            except KubectlError as e:
                if "only a ServiceAccount may write" in e.stderr:
                    return
                raise
            assert time.monotonic() < deadline, "the admission policy never came into force"
            time.sleep(0.2)
    finally:
        kubectl.run("delete", *probe)


# Imported here, not at the top, so the fixtures below are one self-contained addition.
from kokpit.local import realnode  # noqa: E402


@pytest.fixture(scope="session")
def real_meta_cluster(
    assets: Assets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A local meta-cluster of its own with one real node, ``kokpit-real-0`` (a kubelet,
    containerd and kube-proxy; :mod:`kokpit.local.realnode`), Ready when this returns. Pods
    for it select the label ``kokpit.io/real-node`` and tolerate the taint of that key; images
    come from :func:`kokpit.local.realnode.load_image`. Needs root, and one such cluster per
    machine at a time (kube-proxy's chains are the machine's). ``down`` puts the machine back
    as it was."""
    cluster = LocalCluster(tmp_path_factory.mktemp("real-meta"))
    cluster.up(assets, progress=lambda _: None, real_nodes=1)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kokpit_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kokpit's image as ``make image`` builds it (``kokpit local image``: Debian from the
    mirror plus the virtualenv, written as an OCI archive; about two minutes, needs root),
    once per session: test_kokpit_image checks it, test_in_cluster runs the operators from it.
    Both are in the real-node session, so the image is built once."""
    if os.geteuid() != 0:
        pytest.fail("building the image needs root (mmdebstrap, chroot)")
    out = tmp_path_factory.mktemp("image") / "kokpit.oci.tar"
    args = ["--out", str(out), "--revision", IMAGE_REVISION, "--source", IMAGE_SOURCE]
    proc = subprocess.run(
        [sys.executable, "-m", "kokpit", "local", "image", *args],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MB unpacked" in proc.stdout
    return out


@pytest.fixture(scope="session")
def real_kubectl(real_meta_cluster: LocalCluster, assets: Assets) -> Kubectl:
    return Kubectl(assets.bin("kubectl"), real_meta_cluster.kubeconfig)


@pytest.fixture(scope="session")
def real_node(real_meta_cluster: LocalCluster) -> str:
    """The name of the real node of :func:`real_meta_cluster`."""
    return realnode.node_name(0)


# Imported here, not at the top, so the fixtures below are one self-contained addition.
from kokpit.providers.repair.emulator import FakeSystem, RedfishEmulator  # noqa: E402
from kokpit.providers.repair.receiver import WebhookReceiver  # noqa: E402


@pytest.fixture(scope="session")
def redfish_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedfishEmulator]:
    """A Redfish BMC (sushy-tools' emulator, fake driver, TLS from its own CA, basic auth;
    :mod:`kokpit.providers.repair.emulator`) with 16 systems, shared by the session: a test
    takes systems no other test uses (:func:`bmc_system`)."""
    emulator = RedfishEmulator(tmp_path_factory.mktemp("redfish"), systems=16)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


_bmc_systems = itertools.count()


@pytest.fixture
def bmc_system(redfish_emulator: RedfishEmulator) -> FakeSystem:
    """A system of :func:`redfish_emulator` that no other test of the session uses."""
    return redfish_emulator.systems[next(_bmc_systems) % len(redfish_emulator.systems)]


@pytest.fixture
def webhook_receiver(tmp_path: Path) -> Iterator[WebhookReceiver]:
    """An HTTPS receiver on loopback (its own CA; :mod:`kokpit.providers.repair.receiver`)."""
    receiver = WebhookReceiver(tmp_path / "receiver")
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


# Imported here, not at the top, so the fixture below is one self-contained addition.
from fixtures.prometheus import PrometheusServer, prometheus_server  # noqa: E402


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus (Debian's, :mod:`fixtures.prometheus`) scraping every second, on a
    free loopback port; it scrapes nothing until the test calls ``prometheus.scrape([...])``
    with ``host:port`` targets (such as an operator's health port)."""
    with prometheus_server(tmp_path / "prometheus") as server:
        yield server
