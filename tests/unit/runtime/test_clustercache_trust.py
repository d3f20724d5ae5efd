"""The cluster cache's trust in a kubeconfig Secret, and messages that never quote its data."""

import base64
import json
from typing import Any

import pytest

from kokpit.api.v1alpha1 import CLUSTERS
from kokpit.runtime import Client, ClientConfig, ClusterCache, ClusterCacheOptions, ClusterNotReady
from kokpit.runtime.clustercache import untrusted
from kokpit.runtime.informer import Informer, Scope

Object = dict[str, Any]
CLUSTER: Object = {
    "apiVersion": "kokpit.io/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "biz", "namespace": "ns", "uid": "uid-biz"},
}
SECRET_TEXT = "hunter2-PRIVATE-KEY-MATERIAL"


def secret(
    *, owner: Object | None = None, type_: str = "kokpit.io/kubeconfig", **data: str
) -> Object:
    refs = [] if owner is None else [owner]
    return {
        "type": type_,
        "metadata": {"name": "biz-admin-kubeconfig", "ownerReferences": refs},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def controller(kind: str = "Cluster", uid: str = "uid-biz", name: str = "biz") -> Object:
    return {
        "apiVersion": "kokpit.io/v1alpha1",
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
    }


def test_only_a_secret_its_cluster_controls_and_of_the_kubeconfig_type_is_trusted() -> None:
    assert untrusted(CLUSTER, secret(owner=controller()), "kokpit.io/kubeconfig") is None
    assert untrusted(CLUSTER, secret(), "kokpit.io/kubeconfig") == (
        "it has no controller owner (it must be issued for this Cluster)"
    )
    not_controller = controller() | {"controller": False}
    assert untrusted(CLUSTER, secret(owner=not_controller), "kokpit.io/kubeconfig") == (
        "it has no controller owner (it must be issued for this Cluster)"
    )
    # Same name, another uid: a Cluster deleted and created again does not inherit it.
    assert untrusted(CLUSTER, secret(owner=controller(uid="old")), "kokpit.io/kubeconfig") == (
        "its controller is Cluster biz, not this Cluster"
    )
    machine = controller(kind="Machine", uid="uid-biz", name="m1")
    assert untrusted(CLUSTER, secret(owner=machine), "kokpit.io/kubeconfig") == (
        "its controller is Machine m1, not this Cluster"
    )
    assert untrusted(
        CLUSTER, secret(owner=controller(), type_="Opaque"), "kokpit.io/kubeconfig"
    ) == ("its type is Opaque, not kokpit.io/kubeconfig")


@pytest.fixture
def cache() -> ClusterCache:
    client = Client(ClientConfig(server="https://127.0.0.1:1"))
    clusters = Informer(client, Scope(CLUSTERS))
    return ClusterCache(client, clusters, ClusterCacheOptions(secret_name=lambda c: "x"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Secret S has no 'value' key"),
        ({"value": f"{SECRET_TEXT}:\n  - [\n"}, "cannot parse kubeconfig in Secret S"),
        ({"value": f"clusters: []\nsecret: {SECRET_TEXT}\n"}, "kubeconfig in Secret S has no"),
    ],
)
def test_a_broken_kubeconfig_is_reported_without_quoting_it(
    cache: ClusterCache, data: dict[str, str], message: str
) -> None:
    with pytest.raises(ClusterNotReady) as refused:
        cache._config(secret(owner=controller(), **data), "Secret S")
    assert message in str(refused.value)
    assert "hunter2" not in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_certificate_that_cannot_load_is_refused_by_type_only(cache: ClusterCache) -> None:
    b64 = base64.b64encode(f"-----BEGIN CERTIFICATE-----\n{SECRET_TEXT}\n".encode()).decode()
    text = json.dumps(
        {
            "clusters": [
                {
                    "name": "c",
                    "cluster": {"server": "https://127.0.0.1:1", "certificate-authority-data": b64},
                }
            ],
            "users": [
                {"name": "u", "user": {"client-certificate-data": b64, "client-key-data": b64}}
            ],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    with pytest.raises(ClusterNotReady) as refused:
        cache._config(secret(owner=controller(), value=text), "Secret S")
    assert "Secret S" in str(refused.value)
    assert "hunter2" not in str(refused.value)
