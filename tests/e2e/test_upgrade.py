"""Upgrades of kokpit's CRDs on a real API server (docs/api-versions.md, docs/install.md):

- over an older install (tests/e2e/upgrade/kokpit-b26d1ae: the CRDs of an earlier commit,
  before the Rollout's approval and assessment and the guard's RolloutBatch), by each way the
  docs name (``kubectl apply -k``, client-side and server-side, and ``kokpit install``): every
  object of every kind is still there, the same object, unchanged, readable by kokpit at
  v1alpha1 and conforming to kokpit/api's types, and the new fields work;
- a new storage version (v1alpha2 beside v1alpha1, conversion None): the API server refuses
  to drop v1alpha1 while objects may be stored at it; ``kokpit migrate-storage`` rewrites them
  and trims storedVersions; then v1alpha1 can go;
- a tighter rule over stored objects that break it: they stay readable and writable (the API
  server's validation ratcheting), and only a change of the offending field must obey it.

The module starts its own meta-cluster: these tests install, replace and delete kokpit's CRDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit.api.schema import crd
from kokpit.api.v1alpha1 import KINDS, VERSION
from kokpit.local import Assets, Kubectl, KubectlError, LocalCluster
from kokpit.runtime import Client, ClientConfig
from tests.e2e.support import eventually

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "config"
#: config/default with the CRDs of commit b26d1ae (see its kustomization.yaml).
OLDER = Path(__file__).parent / "upgrade" / "kokpit-b26d1ae"
USERS = "fleet"
CRD_NAMES = tuple(f"{k.plural}.{k.group}" for k in KINDS)
#: The JSON-pointer prefix of a CRD's (first) version's properties.
PROPERTIES = "/spec/versions/0/schema/openAPIV3Schema/properties"

Object = dict[str, Any]
Key = tuple[str, str, str]


@pytest.fixture(scope="module")
def meta(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("upgrade-meta"))
    cluster.up(assets, progress=lambda _: None)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def k(meta: LocalCluster, assets: Assets) -> Iterator[Kubectl]:
    """kubectl on the module's meta-cluster; afterwards kokpit is gone again, CRDs and all."""
    kubectl = Kubectl(assets.bin("kubectl"), meta.kubeconfig)
    kubectl.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": USERS}}])
    yield kubectl
    kubectl.run("delete", "crd", *CRD_NAMES, "--ignore-not-found", "--wait", timeout=180)
    kubectl.run(
        "delete", "-k", str(CONFIG / "default"), "--ignore-not-found", "--wait", timeout=180
    )


def kokpit(k: Kubectl, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``kokpit COMMAND ARGS`` as a person runs it, against the module's meta-cluster."""
    return subprocess.run(
        [sys.executable, "-m", "kokpit", command, "--kubeconfig", str(k.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- the users' objects: one or more of every kind, valid under the older schema and today's --


def users_objects() -> list[Object]:
    def obj(kind: str, name: str, spec: Object, namespaced: bool = True) -> Object:
        meta = {"name": name, "namespace": USERS} if namespaced else {"name": name}
        return {"apiVersion": f"kokpit.io/{VERSION}", "kind": kind, "metadata": meta, "spec": spec}

    version = "v1.36.3"
    return [
        obj(
            "ClusterPackageVersion",
            "k8s-1.36",
            {
                "kubernetesVersion": version,
                "components": {
                    "etcd": {"version": "v3.6.8"},
                    "kubeAPIServer": {"version": version, "flags": {"v": "2"}},
                    "kubeControllerManager": {"version": version},
                    "kubeScheduler": {"version": version},
                },
            },
            namespaced=False,
        ),
        obj(
            "MachinePackageVersion",
            "node-1.36",
            {
                "packages": [
                    {
                        "name": "app",
                        "kind": "Other",
                        "version": "1.0",
                        "install": {
                            "script": {
                                "check": {"run": "cat /etc/app-version 2>/dev/null || true"},
                                "install": {"run": "echo 1.0 > /etc/app-version"},
                            }
                        },
                    }
                ]
            },
            namespaced=False,
        ),
        obj("Cluster", "prod", {"packageVersion": "k8s-1.36", "runtime": "kubernetes"}),
        obj(
            "Machine",
            "host-1",
            {
                "clusterRef": {"name": "prod"},
                "packageVersion": "node-1.36",
                "executor": "ssh",
                "address": "10.0.0.1",
                "sshSecretRef": {"name": "host-1-ssh"},
                "nodeLabels": {"pool": "a"},
            },
        ),
        obj(
            "NodeFault",
            "host-1.kerneldeadlock",
            {"machineRef": {"name": "host-1"}, "type": "KernelDeadlock"},
        ),
        obj(
            "RemediationPolicy",
            "pool-a",
            {
                "machineSelector": {"matchLabels": {"pool": "a"}},
                "faultTypes": ["KernelDeadlock"],
                "steps": [{"action": "RestartKubelet", "timeoutSeconds": 60}],
            },
        ),
        obj(
            "Remediation",
            "host-1.kerneldeadlock",
            {
                "faultRef": {"name": "host-1.kerneldeadlock"},
                "machineRef": {"name": "host-1"},
                "policyRef": {"name": "pool-a"},
            },
        ),
        obj(
            "RiskPolicy",
            "drains",
            {"actions": ["Drain"], "rateLimit": {"count": 2, "windowSeconds": 600}},
            namespaced=False,
        ),
        obj("RiskLedger", "drains", {"policyUID": "0f0e0d0c"}, namespaced=False),
        obj(
            "Rollout",
            "app-2",
            {
                "target": {"kind": "Machine", "selector": {}, "packageVersion": "node-1.36"},
                "batches": [{"size": "1"}, {"size": "100%"}],
                "analysis": {
                    "prometheus": "http://prometheus.monitoring:9090",
                    "metrics": [{"name": "up", "query": "up", "successCondition": "result >= 1"}],
                },
            },
        ),
    ]


def create_users_objects(k: Kubectl) -> None:
    k.run(
        "create",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": users_objects()}),
    )
    # A status on two of them, as operators write it (the status subresource).
    for kind, name, status in (
        ("machine", "host-1", {"phase": "Provisioning"}),
        ("rollout", "app-2", {"phase": "Paused", "pausedReason": "PausedByPerson"}),
    ):
        k.run(
            "patch",
            kind,
            name,
            "-n",
            USERS,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )


def key(obj: Object) -> Key:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def users_objects_now(k: Kubectl, version: str = VERSION) -> dict[Key, Object]:
    """Every object of kokpit's kinds, read at ``version``, by (kind, namespace, name)."""
    kinds = ",".join(f"{k.plural}.{version}.{k.group}" for k in KINDS)
    return {key(o): o for o in k.get(kinds, "-A")["items"]}


def essence(obj: Object) -> Object:
    """What an upgrade must keep: the object (uid), its spec and status, its generation."""
    meta = obj["metadata"]
    return {
        "uid": meta["uid"],
        "generation": meta.get("generation"),
        "spec": obj.get("spec"),
        "status": obj.get("status"),
    }


# -- what kokpit itself reads ---------------------------------------------------------------


def conforms(schema: Object, value: Any, where: str) -> list[str]:
    """Where ``value`` is not what ``schema`` (from kokpit/api's types) describes: fields the
    types do not know, required fields missing, values of the wrong type."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        wrong = [f"{where}.{r}: missing" for r in schema.get("required", []) if r not in value]
        properties = schema.get("properties")
        for name, item in value.items():
            if properties is not None:
                if name not in properties:
                    wrong.append(f"{where}.{name}: not a field of kokpit's types")
                else:
                    wrong += conforms(properties[name], item, f"{where}.{name}")
            elif "additionalProperties" in schema:
                wrong += conforms(schema["additionalProperties"], item, f"{where}[{name}]")
        return wrong
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        return [
            e for i, v in enumerate(value) for e in conforms(schema["items"], v, f"{where}[{i}]")
        ]
    types: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "boolean": bool,
        "number": (int, float),
    }
    if kind in types and not isinstance(value, types[kind]):
        return [f"{where}: {value!r} is not a {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of kokpit's values"]
    return []


async def read_as_kokpit(kubeconfig: Path) -> dict[Key, Object]:
    """Every object of kokpit's kinds as the operators read them (kokpit's client, each kind's
    descriptor from kokpit/api), each checked against the types' schema."""
    found: dict[Key, Object] = {}
    async with Client(ClientConfig.load(kubeconfig)) as client:
        for kind in KINDS:
            schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for obj in (await client.list(kind.resource)).items:
                body = {f: obj[f] for f in ("spec", "status") if f in obj}
                wrong = conforms({**schema, "required": []}, body, kind.kind)
                assert not wrong, wrong
                found[key(obj)] = obj
    return found


def established(k: Kubectl) -> None:
    k.wait_established(*CRD_NAMES)


# -- an upgrade over an older install ---------------------------------------------------------


def install_older(k: Kubectl, how: str, tmp_path: Path) -> None:
    if how == "kubectl":
        k.run("apply", "-k", str(OLDER))
    elif how == "kubectl --server-side":
        k.run("apply", "--server-side", "-k", str(OLDER))
    else:
        manifests = tmp_path / "older.yaml"
        manifests.write_text(k.run("kustomize", str(OLDER)))
        done = kokpit(k, "install", "--manifests", str(manifests))
        assert done.returncode == 0, done.stderr
    established(k)


def upgrade(k: Kubectl, how: str) -> None:
    if how == "kubectl":
        k.run("apply", "-k", str(CONFIG / "default"))
    elif how.startswith("kubectl --server-side"):
        k.run("apply", *how.split()[1:], "-k", str(CONFIG / "default"))
    else:
        done = kokpit(k, "install")
        assert done.returncode == 0, done.stderr
    established(k)


def approval_rollout() -> Object:
    (rollout,) = [o for o in users_objects() if o["kind"] == "Rollout"]
    rollout = copy.deepcopy(rollout)
    rollout["metadata"]["name"] = "app-3"
    rollout["spec"]["approval"] = {"aboveObjects": 5}
    return rollout


def rollout_batch_policy() -> Object:
    return {
        "apiVersion": f"kokpit.io/{VERSION}",
        "kind": "RiskPolicy",
        "metadata": {"name": "rollout-batches"},
        "spec": {"actions": ["RolloutBatch"], "maxInFlight": 1},
    }


@pytest.mark.parametrize(
    ("how", "then"),
    [
        ("kubectl", "kubectl"),
        ("kubectl --server-side", "kubectl --server-side"),
        ("kokpit install", "kokpit install"),
        # kokpit install takes over what kubectl applied (it applies with force).
        ("kubectl", "kokpit install"),
        # Nor does kubectl's server-side apply take over from its own client-side apply.
        ("kubectl", "kubectl --server-side --force-conflicts"),
        # kubectl's server-side apply must be told to take over kokpit install's fields.
        ("kokpit install", "kubectl --server-side --force-conflicts"),
    ],
)
def test_an_upgrade_over_an_older_install_keeps_every_object(
    k: Kubectl, how: str, then: str, tmp_path: Path
) -> None:
    install_older(k, how, tmp_path)
    create_users_objects(k)
    # The older schema does not know what came later: kubectl's strict field validation names
    # the unknown field, and the enum refuses the new action.
    with pytest.raises(KubectlError, match=r'unknown field "spec.approval"'):
        k.run("create", "-f", "-", stdin=json.dumps(approval_rollout()))
    with pytest.raises(KubectlError, match=r'Unsupported value: "RolloutBatch"'):
        k.run("create", "-f", "-", stdin=json.dumps(rollout_batch_policy()))
    before = users_objects_now(k)
    assert {key[0] for key in before} == {kind.kind for kind in KINDS}

    if then == "kubectl --server-side --force-conflicts":
        with pytest.raises(KubectlError, match="conflict") as conflict:
            upgrade(k, "kubectl --server-side")
        # Fields owned by the manager that installed them: over kokpit install, those of the
        # CRDs whose schema changed (and of the admission policies); over a client-side apply,
        # those of the admission policies only (kubectl moves the rest to server-side apply).
        stderr = conflict.value.stderr
        if how == "kokpit install":
            assert 'conflict with "kokpit-install": .spec.versions' in stderr
        else:
            assert 'conflict with "kubectl-client-side-apply" using admissionregistration' in stderr
            assert ".spec.versions" not in stderr
    upgrade(k, then)

    after = users_objects_now(k)
    assert set(after) == set(before)
    for object_key, obj in after.items():
        assert essence(obj) == essence(before[object_key]), object_key
    as_kokpit = asyncio.run(read_as_kokpit(k.kubeconfig))
    assert {object_key: essence(o) for object_key, o in as_kokpit.items()} == {
        object_key: essence(o) for object_key, o in before.items()
    }
    listed = kokpit(k, "rollout", "list", "-n", USERS)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split() for line in listed.stdout.splitlines() if line.startswith(USERS)]
    assert row[:5] == [USERS, "app-2", "Machine", "node-1.36", "Paused"]
    for name in CRD_NAMES:
        assert k.get("crd", name)["status"]["storedVersions"] == [VERSION]
    # The storage version did not change: migrating is not needed, and harmless.
    migrated = kokpit(k, "migrate-storage")
    assert migrated.returncode == 0, migrated.stderr
    assert {kk: essence(o) for kk, o in users_objects_now(k).items()} == {
        kk: essence(o) for kk, o in before.items()
    }

    # What the new schema adds now works, and is kept.
    k.run("create", "-f", "-", stdin=json.dumps(approval_rollout()))
    assert k.get("rollout", "app-3", "-n", USERS)["spec"]["approval"] == {"aboveObjects": 5}
    k.run("create", "-f", "-", stdin=json.dumps(rollout_batch_policy()))
    k.run(
        "patch",
        "rollout",
        "app-2",
        "-n",
        USERS,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"pausedReason": "NeedsApproval"}}),
    )
    assert k.get("rollout", "app-2", "-n", USERS)["status"]["pausedReason"] == "NeedsApproval"


# -- a new storage version --------------------------------------------------------------------


def current_crds() -> list[Object]:
    return [yaml.safe_load((CONFIG / "crd" / f"{name}.yaml").read_text()) for name in CRD_NAMES]


def with_versions(crds: list[Object], *versions: tuple[str, bool]) -> list[Object]:
    """``crds`` serving each of ``versions`` (name, storage) with today's schema: the case of
    a v1alpha2 whose schema is v1alpha1's (conversion None rewrites only apiVersion)."""
    out = []
    for doc in copy.deepcopy(crds):
        (current,) = doc["spec"]["versions"]
        doc["spec"]["versions"] = [
            {**copy.deepcopy(current), "name": name, "served": True, "storage": storage}
            for name, storage in versions
        ]
        out.append(doc)
    return out


def apply_crds(k: Kubectl, crds: list[Object]) -> None:
    k.apply(crds, field_manager="kokpit-test")
    established(k)


def stored_versions(k: Kubectl) -> set[tuple[str, ...]]:
    return {tuple(k.get("crd", name)["status"]["storedVersions"]) for name in CRD_NAMES}


@contextlib.contextmanager
def frozen_machines(k: Kubectl) -> Iterator[None]:
    """While inside: a ValidatingAdmissionPolicy refuses every update of a Machine."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "frozen-machines"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["kokpit.io"],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": ["machines"],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": "Machines are frozen here"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "frozen-machines"},
        "spec": {"policyName": "frozen-machines", "validationActions": ["Deny"]},
    }
    k.apply([policy, binding])

    def enforced() -> bool:
        # A server-side dry run is admitted like a write, and writes nothing.
        try:
            k.run("label", "--dry-run=server", "machine", "host-1", "-n", USERS, "probe=1")
        except KubectlError as e:
            return "Machines are frozen here" in e.stderr
        return False

    try:
        eventually(enforced, timeout=30, what="the admission policy enforced")
        yield
    finally:
        k.run(
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            "frozen-machines",
        )

    def lifted() -> bool:
        try:
            k.run("label", "--dry-run=server", "machine", "host-1", "-n", USERS, "probe=1")
        except KubectlError:
            return False
        return True

    eventually(lifted, timeout=30, what="the admission policy gone")


def test_a_new_storage_version_is_migrated_before_the_old_one_is_removed(k: Kubectl) -> None:
    crds = current_crds()
    apply_crds(k, crds)
    create_users_objects(k)
    before = users_objects_now(k)

    # The next release: v1alpha2 beside v1alpha1, and the storage version.
    apply_crds(k, with_versions(crds, ("v1alpha1", False), ("v1alpha2", True)))
    assert stored_versions(k) == {("v1alpha1", "v1alpha2")}
    # Both versions are served: kokpit of this release still reads every object at v1alpha1.
    assert set(asyncio.run(read_as_kokpit(k.kubeconfig))) == set(before)
    # v1alpha1 cannot go while objects may be stored at it.
    with pytest.raises(
        KubectlError, match=r"must remain in spec\.versions until a storage migration"
    ):
        apply_crds(k, with_versions(crds, ("v1alpha2", True)))

    dry = kokpit(k, "migrate-storage", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        "rollouts.kokpit.io: storage version v1alpha2, storedVersions [v1alpha1, v1alpha2]; "
        "would write 1 object" in dry.stdout
    )
    assert stored_versions(k) == {("v1alpha1", "v1alpha2")}
    assert users_objects_now(k) == before

    # An object that cannot be written (here an admission policy refuses every update of a
    # Machine) is named, and its CRD keeps both stored versions; the other CRDs are done.
    with frozen_machines(k):
        refused = kokpit(k, "migrate-storage")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"refused: Machine {USERS}/host-1: " in refused.stdout
    assert "Machines are frozen here" in refused.stdout
    assert "storedVersions left as it was" in refused.stdout
    assert k.get("crd", "machines.kokpit.io")["status"]["storedVersions"] == [
        "v1alpha1",
        "v1alpha2",
    ]
    assert k.get("crd", "clusters.kokpit.io")["status"]["storedVersions"] == ["v1alpha2"]

    done = kokpit(k, "migrate-storage")
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert "machines.kokpit.io: 1 object at v1alpha2 (1 rewritten" in done.stdout
    assert "storedVersions [v1alpha1, v1alpha2] -> [v1alpha2]" in done.stdout
    assert stored_versions(k) == {("v1alpha2",)}
    migrated = users_objects_now(k)
    for object_key, obj in migrated.items():
        old = before[object_key]
        assert essence(obj) == essence(old), object_key
        # Each object was written (re-encoded at v1alpha2), so its resourceVersion moved.
        assert obj["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"]

    # Again: every object is stored at v1alpha2 already, so the API server writes none.
    again = kokpit(k, "migrate-storage")
    assert again.returncode == 0, again.stderr
    assert "(0 rewritten, 1 already stored there" in again.stdout
    assert users_objects_now(k) == migrated

    # Now v1alpha1 can be removed, and every object reads at v1alpha2 as it was.
    apply_crds(k, with_versions(crds, ("v1alpha2", True)))
    at_v1alpha2 = users_objects_now(k, "v1alpha2")
    assert {kk: essence(o) for kk, o in at_v1alpha2.items()} == {
        kk: essence(o) for kk, o in before.items()
    }


# -- a tighter rule over stored objects ---------------------------------------------------------


def test_a_tighter_rule_leaves_stored_objects_readable_and_writable(k: Kubectl) -> None:
    crds = current_crds()
    apply_crds(k, crds)
    machine = next(o for o in users_objects() if o["kind"] == "Machine")
    machine["spec"] |= {"drainTimeoutSeconds": 86400, "hostCleanupTimeoutSeconds": 90}
    k.run("create", "-f", "-", stdin=json.dumps(machine))

    # A release that bounds a drain to an hour (an OpenAPI maximum) and asks for whole minutes
    # of host cleanup (a CEL rule): the stored Machine breaks both.
    tighter = copy.deepcopy(crds)
    machines = next(c for c in tighter if c["metadata"]["name"] == "machines.kokpit.io")
    spec = machines["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["drainTimeoutSeconds"]["maximum"] = 3600
    spec["properties"]["hostCleanupTimeoutSeconds"]["x-kubernetes-validations"] = [
        {"rule": "self % 60 == 0", "message": "must be whole minutes"}
    ]
    apply_crds(k, tighter)

    def patch(patch: Object, *more: str) -> None:
        k.run(
            "patch",
            "machine",
            "host-1",
            "-n",
            USERS,
            "--type=merge",
            "-p",
            json.dumps(patch),
            *more,
        )

    # Still read as stored, and written wherever the write leaves the offending fields alone.
    got = k.get("machine", "host-1", "-n", USERS)["spec"]
    assert (got["drainTimeoutSeconds"], got["hostCleanupTimeoutSeconds"]) == (86400, 90)
    patch({"metadata": {"labels": {"rack": "r1"}}})
    patch({"spec": {"nodeLabels": {"pool": "b"}}})
    patch({"status": {"phase": "Running"}}, "--subresource=status")
    done = kokpit(k, "migrate-storage")
    assert done.returncode == 0, done.stderr + done.stdout

    # A change of an offending field must obey the new rule, and so must a new object.
    with pytest.raises(KubectlError, match="should be less than or equal to 3600"):
        patch({"spec": {"drainTimeoutSeconds": 7200}})
    with pytest.raises(KubectlError, match="must be whole minutes"):
        patch({"spec": {"hostCleanupTimeoutSeconds": 91}})
    other = copy.deepcopy(machine)
    other["metadata"]["name"] = "host-2"
    with pytest.raises(KubectlError, match="should be less than or equal to 3600"):
        k.run("create", "-f", "-", stdin=json.dumps(other))
    patch({"spec": {"drainTimeoutSeconds": 600, "hostCleanupTimeoutSeconds": 120}})
    got = k.get("machine", "host-1", "-n", USERS)
    assert (got["spec"]["drainTimeoutSeconds"], got["status"]["phase"]) == (600, "Running")
