"""Each CRD stores its objects at exactly one version (docs/api-versions.md): today
kokpit.io/v1alpha1, served and stored, the one version of every checked-in CRD."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kokpit.api.schema import storage_version
from kokpit.api.v1alpha1 import KINDS, VERSION

CRDS = Path(__file__).parents[3] / "config" / "crd"


def checked_in() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.kokpit.io.yaml"))]


def test_every_crd_serves_and_stores_v1alpha1_only() -> None:
    crds = checked_in()
    assert len(crds) == len(KINDS)
    for crd in crds:
        versions = [(v["name"], v["served"], v["storage"]) for v in crd["spec"]["versions"]]
        assert versions == [(VERSION, True, True)], crd["metadata"]["name"]
        assert storage_version(crd) == VERSION


def with_versions(*versions: tuple[str, bool, bool]) -> dict[str, Any]:
    crd = copy.deepcopy(checked_in()[0])
    (current,) = crd["spec"]["versions"]
    crd["spec"]["versions"] = [
        {**current, "name": name, "served": served, "storage": storage}
        for name, served, storage in versions
    ]
    return crd


def test_the_storage_version_of_a_crd_with_two_versions() -> None:
    crd = with_versions(("v1alpha1", True, False), ("v1alpha2", True, True))
    assert storage_version(crd) == "v1alpha2"


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ((("v1alpha1", True, True), ("v1alpha2", True, True)), "marks 2 versions"),
        ((("v1alpha1", True, False),), "marks 0 versions"),
        ((("v1alpha1", True, False), ("v1alpha2", False, True)), "which it does not serve"),
    ],
)
def test_a_crd_without_exactly_one_served_storage_version_is_refused(
    versions: tuple[tuple[str, bool, bool], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        storage_version(with_versions(*versions))
