"""LabelSelector: which objects a policy or a rollout applies to, in Kubernetes' own shape
(``metav1.LabelSelector``), so ``kubectl`` users read it as they read a Deployment's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kokpit.api import names
from kokpit.api.schema import Rule, each, field

_KEY_RULE = Rule(
    names.is_qualified_name("self"), f"a label key must be {names.QUALIFIED_NAME_RULES}"
)
_VALUE_RULE = Rule(names.is_label_value("self"), f"a label value must be {names.LABEL_VALUE_RULES}")


@dataclass(kw_only=True)
class LabelSelectorRequirement:
    """A label key, an operator and values: In and NotIn need values, Exists and DoesNotExist
    take none."""

    key: str = field(
        "The label key.",
        min_length=1,
        max_length=names.QUALIFIED_NAME_MAX,
        rules=(_KEY_RULE,),
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = field(
        "How the key's value is compared with values."
    )
    values: list[str] = field(
        "The values for In and NotIn.",
        default_factory=list,
        max_items=64,
        values=each(max_length=names.LABEL_MAX, rules=(_VALUE_RULE,)),
    )
    __rules__ = (
        Rule(
            "(self.operator in ['In', 'NotIn']) == (size(self.values) > 0)",
            "In and NotIn need at least one value; Exists and DoesNotExist take none",
        ),
    )


@dataclass(kw_only=True)
class LabelSelector:
    """Objects whose labels match every matchLabels pair and every matchExpressions
    requirement. An empty selector selects everything in the namespace."""

    match_labels: dict[str, str] = field(
        "Labels an object must carry with exactly these values.",
        default_factory=dict,
        max_properties=64,
        rules=(
            Rule(
                f"self.all(k, {names.is_qualified_name('k')})",
                f"every label key must be {names.QUALIFIED_NAME_RULES}",
            ),
        ),
        values=each(max_length=names.LABEL_MAX, rules=(_VALUE_RULE,)),
    )
    match_expressions: list[LabelSelectorRequirement] = field(
        "Requirements an object's labels must meet.", default_factory=list, max_items=32
    )


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy a ``metav1.LabelSelector`` (matchLabels and
    matchExpressions); an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator = requirement.get("key", ""), requirement.get("operator")
        values = requirement.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # unknown: match nothing rather than everything
    return True
