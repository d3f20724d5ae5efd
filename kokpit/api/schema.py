"""API types defined once, as Python dataclasses; OpenAPI schemas and CRDs derived from them.

A type's fields carry their documentation, bounds and CEL validation rules in
:func:`field`; :func:`openapi` turns a dataclass into the OpenAPI v3 schema the API server
enforces (so invalid objects are rejected with a message a person understands, before any
operator sees them), and :func:`crd` wraps the spec and status types of a :class:`Kind` into
a CustomResourceDefinition. ``kokpit/api/generate.py`` writes the CRDs to ``config/crd``, and
a test fails when the checked-in YAML is stale.

Supported field types: ``str``, ``int``, ``bool``, ``float``, ``Literal[...]`` (an enum),
``list[T]``, ``dict[str, T]``, nested dataclasses, and ``T | None`` (optional: omitted from
``required``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kokpit.api.resource import Resource

MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Rule:
    """A CEL validation rule (``x-kubernetes-validations``) and the message shown on failure."""

    rule: str
    message: str
    #: Where the error is reported, e.g. ``.etcdReplicas`` (relative to the rule's schema).
    field_path: str | None = None
    reason: str | None = None
    #: A CEL expression computing the message from the value (e.g. naming the offending key);
    #: the static ``message`` is shown if it fails.
    message_expression: str | None = None
    #: Evaluate on create too, with ``oldSelf`` an optional (none on create): a rule written
    #: ``oldSelf.hasValue() || ...`` holds only on create, for what cannot change afterwards
    #: (such as ``metadata.name``), so objects created before the rule stay writable.
    optional_old_self: bool = False

    def to_openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            out["messageExpression"] = self.message_expression
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        if self.optional_old_self:
            out["optionalOldSelf"] = True
        return out


def field(
    description: str,
    *,
    default: Any = MISSING,
    default_factory: Any = MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    format: str | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    max_properties: int | None = None,
    rules: tuple[Rule, ...] = (),
    list_type: str | None = None,
    list_map_keys: tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
) -> Any:
    """A documented field. The description is what ``kubectl explain`` shows; keep it a sentence
    or two saying what the field means and what happens when it changes. ``values`` constrains
    each value of a map (or item of a list): see :func:`each`."""
    schema: dict[str, Any] = {
        "description": description,
        **each(
            minimum=minimum,
            maximum=maximum,
            min_length=min_length,
            max_length=max_length,
            pattern=pattern,
            rules=rules,
        ),
    }
    for key, value in (
        ("format", format),
        ("minItems", min_items),
        ("maxItems", max_items),
        ("maxProperties", max_properties),
        ("x-kubernetes-list-type", list_type),
    ):
        if value is not None:
            schema[key] = value
    if list_map_keys:
        schema["x-kubernetes-list-map-keys"] = list(list_map_keys)
    if values:
        schema[_VALUES] = values
    if default is not MISSING and not callable(default) and default is not None:
        schema["default"] = default
    if isinstance(default_factory, type) and dataclasses.is_dataclass(default_factory):
        # The defaulted object in full, so CEL rules on it see every field.
        schema["default"] = defaults(default_factory)
    kwargs: dict[str, Any] = {"metadata": {"openapi": schema}}
    if default is not MISSING:
        kwargs["default"] = default
    if default_factory is not MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def each(
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    rules: tuple[Rule, ...] = (),
) -> dict[str, Any]:
    """Constraints on a value: a field's own, or each value of a map field (its ``values``).
    A rule on each value is reported at that value (``spec.nodeLabels[rack]``), so its message
    need not say which one; and a map value's ``max_length`` bounds its CEL cost."""
    schema: dict[str, Any] = {}
    for key, value in (
        ("minimum", minimum),
        ("maximum", maximum),
        ("minLength", min_length),
        ("maxLength", max_length),
        ("pattern", pattern),
    ):
        if value is not None:
            schema[key] = value
    if rules:
        schema["x-kubernetes-validations"] = [r.to_openapi() for r in rules]
    return schema


#: Where :func:`field` keeps ``values`` until :func:`openapi` merges it into the item schema.
_VALUES = "x-kokpit-values"


def openapi(cls: type) -> dict[str, Any]:
    """The OpenAPI v3 schema of a dataclass (see the module docstring for what is supported)."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        extra = dict(f.metadata.get("openapi", {}))
        tp, optional = _unwrap_optional(hints[f.name])
        values = extra.pop(_VALUES, None)
        schema = {**_type_schema(tp), **extra}
        if values:
            key = "items" if schema.get("type") == "array" else "additionalProperties"
            schema[key] = {**schema[key], **values}
        if schema.get("type") == "object" and "properties" not in schema:
            schema.setdefault("additionalProperties", {"type": "string"})
        properties[_camel(f.name)] = schema
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if not optional and not has_default:
            required.append(_camel(f.name))
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if cls.__doc__:
        out["description"] = " ".join(cls.__doc__.split())
    if required:
        out["required"] = required
    rules: tuple[Rule, ...] = getattr(cls, "__rules__", ())
    if rules:
        out["x-kubernetes-validations"] = [r.to_openapi() for r in rules]
    return out


def defaults(cls: type) -> dict[str, Any]:
    """The JSON form of ``cls()``'s defaults: scalars and nested defaulted objects."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        factory: Any = f.default_factory
        if f.default is not MISSING and f.default is not None:
            out[_camel(f.name)] = f.default
        elif isinstance(factory, type) and dataclasses.is_dataclass(factory):
            out[_camel(f.name)] = defaults(factory)
    return out


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int32"}
    if tp is float:
        return {"type": "number"}
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(tp))}
    if origin is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _type_schema(item)}
    if origin is dict:
        key, value = typing.get_args(tp)
        if key is not str:
            raise TypeError("map keys must be str")
        return {"type": "object", "additionalProperties": _type_schema(value)}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return openapi(tp)
    raise TypeError(f"unsupported field type {tp!r}")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
        raise TypeError(f"unions other than T | None are not supported: {tp!r}")
    return tp, False


#: Words written as initialisms in JSON names, as in the Kubernetes API (podCIDR, kubeAPIServer).
INITIALISMS = {
    "api": "API",
    "apiserver": "APIServer",
    "cidr": "CIDR",
    "id": "ID",
    "ip": "IP",
    "url": "URL",
    "uid": "UID",
}


def _camel(name: str) -> str:
    """The JSON name of a Python field: ``service_cidr`` → ``serviceCIDR``."""
    head, *rest = name.split("_")
    return head + "".join(INITIALISMS.get(word, word[:1].upper() + word[1:]) for word in rest)


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    """Everything a CRD needs beyond the spec and status types."""

    group: str
    version: str
    kind: str
    plural: str
    spec: type
    status: type | None
    description: str
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("kokpit",)
    printer_columns: tuple[PrinterColumn, ...] = ()
    #: Rules on the root object (they may compare spec with metadata, or with oldSelf).
    rules: tuple[Rule, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def resource(self) -> Resource:
        """The descriptor the client addresses this kind's objects with."""
        return Resource(
            self.group, self.version, self.plural, self.kind, self.scope == "Namespaced"
        )


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition for ``kind``, with status subresource and printer columns."""
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "APIVersion of this object."},
        "kind": {"type": "string", "description": "Kind of this object."},
        "metadata": {"type": "object"},
        "spec": openapi(kind.spec),
    }
    if kind.status is not None:
        properties["status"] = openapi(kind.status)
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": properties,
    }
    if kind.rules:
        root["x-kubernetes-validations"] = [r.to_openapi() for r in kind.rules]
    if any(r.field_path == ".metadata.name" for r in kind.rules):
        # A rule's fieldPath must name a declared property; metadata.name is the one (with
        # generateName) a CRD may declare.
        properties["metadata"] = {"type": "object", "properties": {"name": {"type": "string"}}}
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in kind.printer_columns
    ]
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    # One version, served and the storage version: the API server keeps every object of the
    # kind encoded at exactly one version. A second version (v1alpha2) is added beside this one,
    # not instead of it, and takes over storage only as docs/api-versions.md describes.
    version: dict[str, Any] = {
        "name": kind.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "additionalPrinterColumns": columns,
    }
    if kind.status is not None:
        version["subresources"] = {"status": {}}
    names: dict[str, Any] = {
        "kind": kind.kind,
        "listKind": f"{kind.kind}List",
        "plural": kind.plural,
        "singular": kind.singular,
    }
    if kind.short_names:
        names["shortNames"] = list(kind.short_names)
    if kind.categories:
        names["categories"] = list(kind.categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{kind.group}"},
        "spec": {"group": kind.group, "scope": kind.scope, "names": names, "versions": [version]},
    }


def storage_version(crd: Mapping[str, Any]) -> str:
    """The version ``crd`` stores its objects at: the one of ``spec.versions`` marked
    ``storage: true``. Raises ValueError unless exactly one is, and it is served (an object is
    written at the storage version, so a version that is not served cannot be it)."""
    versions = (crd.get("spec") or {}).get("versions") or []
    storage = [v for v in versions if v.get("storage") is True]
    name = (crd.get("metadata") or {}).get("name", "?")
    if len(storage) != 1:
        raise ValueError(
            f"the CRD {name} marks {len(storage)} versions as its storage version, not one"
        )
    (version,) = storage
    if version.get("served") is not True:
        raise ValueError(f"the CRD {name} stores at {version.get('name')}, which it does not serve")
    found: str = version["name"]
    return found
