"""``kokpit install`` / ``kokpit uninstall``: kokpit's operators in a kubeconfig's cluster.

    kokpit install   [--kubeconfig PATH] [--image IMAGE] [--manifests FILE] [--dry-run]
    kokpit uninstall [--kubeconfig PATH] [--manifests FILE] [--dry-run]

``install`` server-side applies the objects of ``config/install.yaml`` (what
``kubectl kustomize config/default`` renders; ``make generate`` writes it) as the field manager
``kokpit-install``: the CRDs first, until each is Established, then the namespace, the RBAC,
the admission policies, the NetworkPolicy, and the operators' Services, Deployments and
PodDisruptionBudgets. Applying again over an install (an upgrade) changes only what the new
manifests change. ``--image`` runs the operators from another image; ``--dry-run`` prints the
manifests it would apply, touching no cluster.

``uninstall`` deletes what ``install`` made, except the CRDs: deleting a CRD deletes every
object of its kind, and the Clusters, Machines, policies and rollouts are the users', never an
uninstall's to delete. It deletes an object only if it still carries kokpit's label
``app.kubernetes.io/part-of=kokpit`` (an object of the same name someone else made is left
alone), keeps the namespace while kokpit objects live in it, and says what it left behind. To
remove the CRDs too, once their objects are gone: ``kubectl delete crd -l
app.kubernetes.io/part-of=kokpit``.

The manifests come from the source tree this kokpit runs from (``config/install.yaml``, beside
the ``kokpit`` package; the package itself does not carry them), or from ``--manifests``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kokpit.api.v1alpha1 import KINDS
from kokpit.local import assets, release
from kokpit.runtime import ApiError, Client, ClientConfig, ConfigError, NotFound, Resource
from kokpit.runtime.resources import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    CRDS,
    DEPLOYMENTS,
    NAMESPACES,
    NETWORKPOLICIES,
    ROLEBINDINGS,
    ROLES,
    SERVICES,
    VALIDATING_ADMISSION_POLICIES,
    VALIDATING_ADMISSION_POLICY_BINDINGS,
)

Object = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
#: The rendered manifests ``install`` applies (``make generate`` writes them).
MANIFESTS = ROOT / "config" / "install.yaml"
#: What ``make generate`` renders into :data:`MANIFESTS`.
KUSTOMIZATION = ROOT / "config" / "default"
HEADER = (
    "# Rendered by `make generate` (`kubectl kustomize config/default`): do not edit; change\n"
    "# config/ and run it again. `kokpit install` applies this file.\n"
)
FIELD_MANAGER = "kokpit-install"
#: The operators' image, as the manifests name it (the tag is the release's).
IMAGE = "ghcr.io/kokpit/kokpit"
#: The label every installed object carries; ``uninstall`` deletes nothing without it.
PART_OF = ("app.kubernetes.io/part-of", "kokpit")
#: How long each CRD may take to be Established.
ESTABLISHED_TIMEOUT = 60.0

SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")

#: Every kind the manifests may hold, in the order ``install`` applies them: the CRDs before
#: anything, the namespace before what lives in it, the RBAC and the NetworkPolicy before the
#: pods that run under them. ``uninstall`` deletes in the reverse order.
ORDER: tuple[Resource, ...] = (
    CRDS,
    NAMESPACES,
    SERVICE_ACCOUNTS,
    CLUSTERROLES,
    CLUSTERROLEBINDINGS,
    ROLES,
    ROLEBINDINGS,
    VALIDATING_ADMISSION_POLICIES,
    VALIDATING_ADMISSION_POLICY_BINDINGS,
    NETWORKPOLICIES,
    SERVICES,
    DEPLOYMENTS,
    PDBS,
)
#: An image reference: registry, path, tag and digest characters, nothing else (no spaces,
#: quotes or control characters).
IMAGE_PATTERN = re.compile(r"[a-z0-9][a-z0-9._/:@-]{0,254}", re.IGNORECASE)


#: libyaml's loader where PyYAML has it (the CRDs make the manifests thousands of lines).
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InstallError(RuntimeError):
    """The manifests cannot be read or hold something ``install`` cannot apply."""


@dataclass(frozen=True)
class Manifest:
    """One object of the manifests and the resource that addresses it."""

    resource: Resource
    obj: Object

    @property
    def name(self) -> str:
        name: str = self.obj["metadata"]["name"]
        return name

    @property
    def namespace(self) -> str | None:
        namespace: str | None = self.obj["metadata"].get("namespace")
        return namespace

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.resource.kind} {where}{self.name}"


def register(sub: Any) -> None:
    for verb, summary in (
        ("install", "install kokpit's operators into a cluster"),
        ("uninstall", "remove them (never the CRDs, Clusters or Machines)"),
    ):
        p = sub.add_parser(
            verb,
            help=summary,
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--kubeconfig", type=Path, default=None)
        p.add_argument(
            "--manifests",
            type=Path,
            default=MANIFESTS,
            metavar="FILE",
            help=f"the rendered manifests (default: {MANIFESTS})",
        )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="say what would be done and touch no cluster"
            + (" (prints the manifests)" if verb == "install" else ""),
        )
        if verb == "install":
            p.add_argument(
                "--image",
                type=_image,
                default=None,
                help=f"the operators' image (default: the manifests' {IMAGE}:<release>)",
            )
            p.set_defaults(run=run_install)
        else:
            p.set_defaults(run=run_uninstall)


def _image(text: str) -> str:
    """An argparse type: an image reference (it ends up in every operator's pod spec)."""
    if not IMAGE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not an image reference: {text!r} (expected e.g. registry.example/kokpit:1.2.3)"
        )
    return text


# -- the manifests --------------------------------------------------------------------------


def load(path: Path, *, image: str | None = None) -> list[Manifest]:
    """The objects of ``path`` in the order they are applied, the operators' image replaced
    by ``image`` if given. Raises :class:`InstallError` for a kind not in :data:`ORDER`."""
    try:
        docs = [d for d in yaml.load_all(path.read_text(), Loader=_Loader) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise InstallError(
            f"cannot read the manifests {path}: {e}. They live in kokpit's source tree "
            "(config/install.yaml); pass --manifests FILE to use a copy."
        ) from e
    by_kind = {(r.api_version, r.kind): r for r in ORDER}
    manifests = []
    for doc in docs:
        resource = by_kind.get((doc.get("apiVersion"), doc.get("kind")))
        if resource is None:
            raise InstallError(
                f"{path} holds a {doc.get('kind')} ({doc.get('apiVersion')}), which kokpit "
                f"install does not apply; it applies {', '.join(r.kind for r in ORDER)}"
            )
        if image is not None:
            doc = with_image(doc, image)
        manifests.append(Manifest(resource, doc))
    rank = {r: i for i, r in enumerate(ORDER)}
    return sorted(manifests, key=lambda m: rank[m.resource])


def with_image(obj: Object, image: str) -> Object:
    """``obj`` with every container that runs kokpit's image running ``image`` instead."""
    spec = (obj.get("spec") or {}).get("template", {}).get("spec") or {}
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        current = container.get("image", "")
        if current == IMAGE or current.startswith((f"{IMAGE}:", f"{IMAGE}@")):
            container["image"] = image
    return obj


def dump(manifests: Iterable[Manifest]) -> str:
    """The manifests as one multi-document YAML stream, in apply order."""
    return "---\n".join(
        yaml.safe_dump(m.obj, sort_keys=False, default_flow_style=False) for m in manifests
    )


def render(kubectl: Path) -> str:
    """What :data:`MANIFESTS` must hold: ``kubectl kustomize config/default``, with a header."""
    out = subprocess.run(
        [str(kubectl), "kustomize", str(KUSTOMIZATION)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise InstallError(f"kubectl kustomize {KUSTOMIZATION} failed: {out.stderr.strip()}")
    return HEADER + out.stdout


# -- install ---------------------------------------------------------------------------------


def run_install(args: argparse.Namespace) -> int:
    try:
        manifests = load(args.manifests, image=args.image)
        if args.dry_run:
            print(dump(manifests), end="")
            return 0
        asyncio.run(install(ClientConfig.load(args.kubeconfig), manifests))
    except (InstallError, ApiError, ConfigError, OSError, TimeoutError) as e:
        print(f"kokpit install: {e}", file=sys.stderr)
        return 1
    return 0


async def install(config: ClientConfig, manifests: Sequence[Manifest]) -> None:
    """Apply ``manifests`` in order; the CRDs must be Established before anything else."""
    async with Client(config) as client:
        crds = [m for m in manifests if m.resource == CRDS]
        for m in crds:
            await client.apply(m.resource, m.obj, field_manager=FIELD_MANAGER)
        for m in crds:
            await established(client, m.name)
        print(f"applied {len(crds)} CustomResourceDefinitions, Established")
        rest = [m for m in manifests if m.resource != CRDS]
        for m in rest:
            await client.apply(m.resource, m.obj, field_manager=FIELD_MANAGER)
            print(f"applied {m}")
    images = sorted(
        {c["image"] for m in manifests if m.resource == DEPLOYMENTS for c in _containers(m.obj)}
    )
    print(
        f"installed kokpit ({', '.join(images)}). The operators act only in namespaces where "
        "their namespaced roles are bound: see docs/install.md."
    )


async def established(client: Client, name: str) -> None:
    """Wait until CRD ``name`` is Established (its kind can be served)."""
    try:
        async with asyncio.timeout(ESTABLISHED_TIMEOUT):
            while True:
                crd = await client.get(CRDS, name)
                conditions = (crd.get("status") or {}).get("conditions") or []
                if any(
                    c.get("type") == "Established" and c.get("status") == "True" for c in conditions
                ):
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise TimeoutError(
            f"the CRD {name} is not Established after {ESTABLISHED_TIMEOUT:.0f} s"
        ) from None


def _containers(obj: Object) -> list[Object]:
    spec = obj["spec"]["template"]["spec"]
    containers: list[Object] = [*spec.get("initContainers", []), *spec["containers"]]
    return containers


# -- uninstall -------------------------------------------------------------------------------


def run_uninstall(args: argparse.Namespace) -> int:
    try:
        manifests = load(args.manifests)
        if args.dry_run:
            for m in reversed(manifests):
                if m.resource != CRDS:
                    print(f"would delete {m}")
            print(f"would leave the {sum(m.resource == CRDS for m in manifests)} CRDs")
            return 0
        asyncio.run(uninstall(ClientConfig.load(args.kubeconfig), manifests))
    except (InstallError, ApiError, ConfigError, OSError) as e:
        print(f"kokpit uninstall: {e}", file=sys.stderr)
        return 1
    return 0


async def uninstall(config: ClientConfig, manifests: Sequence[Manifest]) -> None:
    """Delete what ``install`` made but the CRDs, the last applied first, and say what is
    left: the CRDs and their objects, objects of kokpit's names it did not make, the
    namespace while kokpit objects live in it, RoleBindings to its roles that people made."""
    left: list[str] = []
    async with Client(config) as client:
        for m in reversed(manifests):
            if m.resource == CRDS:
                continue
            try:
                live = await client.get(m.resource, m.name, namespace=m.namespace)
            except NotFound:
                continue
            labels = live["metadata"].get("labels") or {}
            if labels.get(PART_OF[0]) != PART_OF[1]:
                left.append(f"{m}: not labelled {PART_OF[0]}={PART_OF[1]}, so not kokpit's")
                continue
            if m.resource == NAMESPACES and (held := await _kokpit_objects(client, m.name)):
                left.append(f"{m}: it holds {held}")
                continue
            uid = live["metadata"]["uid"]
            try:
                await client.delete(
                    m.resource,
                    m.name,
                    namespace=m.namespace,
                    uid=uid,
                    propagation_policy="Background",
                )
            except NotFound:
                continue
            print(f"deleted {m}")
        crds = [m.name for m in manifests if m.resource == CRDS]
        left.append(
            f"{len(crds)} CRDs, on purpose (deleting one deletes every object of its kind); "
            "to delete them once their objects are gone: kubectl delete crd -l "
            f"{PART_OF[0]}={PART_OF[1]}"
        )
        if counted := await _kokpit_objects(client, None):
            left.append(f"the objects of kokpit's kinds: {counted}")
        left.extend(await _bindings_to_kokpit_roles(client, manifests))
    print("left behind:")
    for line in left:
        print(f"  {line}")


async def _kokpit_objects(client: Client, namespace: str | None) -> str:
    """How many objects of each kokpit kind there are (in ``namespace``, or everywhere), as
    ``3 Clusters, 40 Machines``; empty when there are none (or the CRDs are gone)."""
    counts = []
    for kind in KINDS:
        resource = kind.resource
        if namespace is not None and not resource.namespaced:
            continue
        try:
            items = (await client.list(resource, namespace=namespace, metadata_only=True)).items
        except NotFound:
            continue
        if items:
            counts.append(f"{len(items)} {resource.kind}{'s' if len(items) > 1 else ''}")
    return ", ".join(counts)


async def _bindings_to_kokpit_roles(client: Client, manifests: Sequence[Manifest]) -> list[str]:
    """The RoleBindings and ClusterRoleBindings that name one of kokpit's roles but are not
    kokpit's own (an admin bound a ``-namespaced`` role in a namespace): they stay, and grant
    nothing until kokpit is installed again."""
    roles = {m.name for m in manifests if m.resource in (CLUSTERROLES, ROLES)}
    ours = {
        (m.namespace, m.name)
        for m in manifests
        if m.resource in (ROLEBINDINGS, CLUSTERROLEBINDINGS)
    }
    left = []
    for resource in (ROLEBINDINGS, CLUSTERROLEBINDINGS):
        for b in (await client.list(resource)).items:
            meta = b["metadata"]
            key = (meta.get("namespace"), meta["name"])
            if b["roleRef"]["name"] in roles and key not in ours:
                where = f"{key[0]}/" if key[0] else ""
                left.append(
                    f"{resource.kind} {where}{key[1]} (to {b['roleRef']['name']}): "
                    "made by someone else"
                )
    return left


def main(argv: list[str] | None = None) -> int:
    """``python -m kokpit.cli.install [--check] [--kubernetes VERSION]``: write
    :data:`MANIFESTS` from ``config/default`` (``make generate``), or with ``--check`` fail if
    it is stale. kubectl comes from the built binaries of that release, else from PATH."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--kubernetes", default=None, help="the release whose kubectl renders")
    args = parser.parse_args(argv)
    found = assets.find(release(args.kubernetes))
    kubectl = found.bin("kubectl") if found else shutil.which("kubectl")
    if kubectl is None:
        print("no kubectl: run `make assets` (or put kubectl on PATH)", file=sys.stderr)
        return 1
    text = render(Path(kubectl))
    if args.check:
        if not MANIFESTS.exists() or MANIFESTS.read_text() != text:
            print(f"stale (run `make generate`): {MANIFESTS}", file=sys.stderr)
            return 1
        return 0
    MANIFESTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
