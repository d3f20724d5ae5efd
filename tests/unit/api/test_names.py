"""The name patterns are the ones the CRDs' CEL rules use (RE2 and Python agree on them), and
the limit on a Cluster's name follows from the names of the objects made from it."""

from __future__ import annotations

import re
from typing import get_args

import pytest

from kokpit.api import names
from kokpit.api.v1alpha1.cluster import (
    DERIVED_NAMES,
    NAME_MAX,
    DerivedSuffix,
    object_name,
)


def qualified(key: str) -> bool:
    return bool(re.match(names.QUALIFIED_NAME, key) and not re.match(names.PREFIX_TOO_LONG, key))


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("rack", True),
        ("example.com/rack", True),
        ("node-role.kubernetes.io/worker", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("x/" + "a" * 63, True),
        ("x/" + "a" * 64, False),
        ("a" * 253 + "/b", True),
        ("a" * 254 + "/b", False),
        ("Example.com/rack", False),  # the prefix is a DNS subdomain: lower case
        ("example.com/", False),
        ("/rack", False),
        ("a/b/c", False),
        ("-rack", False),
        ("rack_", False),
        ("r_a.c-k", True),
        ("bad key", False),
        ("", False),
    ],
)
def test_qualified_names(key: str, ok: bool) -> None:
    assert qualified(key) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("a", True),
        ("v1.2_3-x", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-a", False),
        ("a.", False),
        ("a b", False),
        ("a/b", False),
    ],
)
def test_label_values(value: str, ok: bool) -> None:
    assert bool(re.match(names.LABEL_VALUE, value)) is ok


@pytest.mark.parametrize(
    ("name", "dns1035", "subdomain"),
    [
        ("c1", True, True),
        ("1c", False, True),
        ("a.b", False, True),
        ("a-", False, False),
        ("A", False, False),
    ],
)
def test_dns_names(name: str, dns1035: bool, subdomain: bool) -> None:
    assert bool(re.match(names.DNS1035_LABEL, name)) is dns1035
    assert bool(re.match(names.DNS1123_SUBDOMAIN, name)) is subdomain


def test_every_derived_name_is_declared_with_its_limit() -> None:
    assert set(DERIVED_NAMES) == set(get_args(DerivedSuffix))


def test_the_longest_cluster_name_makes_valid_names_and_one_more_character_does_not() -> None:
    longest = "c" * NAME_MAX
    for suffix, (limit, _) in DERIVED_NAMES.items():
        assert len(object_name(longest, suffix)) <= limit, suffix
    assert NAME_MAX == 47, "the etcd StatefulSet's name (at most 52) is the tightest"
    assert len(object_name(longest + "c", "etcd")) > DERIVED_NAMES["etcd"][0]
    assert NAME_MAX <= names.LABEL_MAX, "the name is the kokpit.io/cluster label's value"
