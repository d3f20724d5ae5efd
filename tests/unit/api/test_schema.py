from dataclasses import dataclass
from typing import Literal

import pytest

from kokpit.api import generate
from kokpit.api.schema import Kind, Rule, _camel, crd, each, field, openapi


def test_checked_in_crds_are_generated_from_the_types() -> None:
    assert generate.main(["--check"]) == 0, "config/crd is stale: run `make generate`"


def test_a_stale_crd_is_reported(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    assert "make generate" in capsys.readouterr().err


@dataclass
class Inner:
    """An inner object."""

    size: int = field("How big.", minimum=1, maximum=9)


@dataclass
class Sample:
    """A sample type."""

    name: str = field("Its name.", min_length=1)
    pod_cidr: str = field("A range.", default="10.0.0.0/8")
    mode: Literal["a", "b"] = field("A choice.", default="a")
    inner: Inner | None = field("Optional nested object.", default=None)
    tags: list[str] = field("Tags.", default_factory=list, max_items=3)
    labels: dict[str, int] = field("Counts.", default_factory=dict)
    __rules__ = (Rule("self.name != 'x'", "x is reserved"),)


def test_openapi_from_a_dataclass() -> None:
    schema = openapi(Sample)
    props = schema["properties"]
    assert schema["required"] == ["name"], "fields with defaults or | None are optional"
    assert schema["description"] == "A sample type."
    assert props["name"] == {"type": "string", "description": "Its name.", "minLength": 1}
    assert props["podCIDR"]["default"] == "10.0.0.0/8"
    assert props["mode"]["enum"] == ["a", "b"]
    assert props["inner"]["properties"]["size"]["maximum"] == 9
    assert props["tags"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Tags.",
        "maxItems": 3,
    }
    assert props["labels"]["additionalProperties"] == {"type": "integer", "format": "int32"}
    assert schema["x-kubernetes-validations"] == [
        {"rule": "self.name != 'x'", "message": "x is reserved"}
    ]


@pytest.mark.parametrize(
    ("python", "json"),
    [
        ("service_cidr", "serviceCIDR"),
        ("kube_apiserver", "kubeAPIServer"),
        ("admin_kubeconfig_secret_ref", "adminKubeconfigSecretRef"),
        ("paused", "paused"),
    ],
)
def test_json_names_follow_kubernetes_conventions(python: str, json: str) -> None:
    assert _camel(python) == json


@dataclass
class WithMap:
    """A map with bounded size and constrained values."""

    labels: dict[str, str] = field(
        "Labels.",
        default_factory=dict,
        max_properties=4,
        rules=(Rule("self.all(k, k != 'x')", "x is reserved", message_expression="'no x'"),),
        values=each(max_length=63, rules=(Rule("self != ''", "not empty"),)),
    )


def test_a_map_field_carries_its_size_limit_and_each_values_constraints() -> None:
    labels = openapi(WithMap)["properties"]["labels"]
    assert labels["maxProperties"] == 4, "without it, CEL on the map cannot be costed"
    assert labels["x-kubernetes-validations"] == [
        {"rule": "self.all(k, k != 'x')", "message": "x is reserved", "messageExpression": "'no x'"}
    ]
    assert labels["additionalProperties"] == {
        "type": "string",
        "maxLength": 63,
        "x-kubernetes-validations": [{"rule": "self != ''", "message": "not empty"}],
    }


def test_rules_on_the_name_are_declared_where_the_api_server_looks_for_them() -> None:
    rule = Rule(
        "oldSelf.hasValue() || size(self.metadata.name) <= 9",
        "at most 9",
        field_path=".metadata.name",
        optional_old_self=True,
    )
    kind = Kind("example.com", "v1", "Thing", "things", Inner, None, "A thing.", rules=(rule,))
    root = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert root["x-kubernetes-validations"] == [
        {
            "rule": "oldSelf.hasValue() || size(self.metadata.name) <= 9",
            "message": "at most 9",
            "fieldPath": ".metadata.name",
            "optionalOldSelf": True,
        }
    ]
    assert root["properties"]["metadata"]["properties"] == {"name": {"type": "string"}}
