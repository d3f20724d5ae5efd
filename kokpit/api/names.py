"""Kubernetes' rules for names, label keys and label values, as regular expressions that both
CEL (RE2) and Python accept, and the CEL expressions the CRDs check them with.

kokpit copies names from its objects into other objects: a Cluster's name begins the names of
its control plane's Services, StatefulSet, Deployments and Secrets; a Machine's name becomes a
Node's name and labels; ``nodeLabels`` and ``taints`` go onto that Node. What the API server
would refuse on the derived object must be refused on kokpit's object first, with a message
that says why, or the operator retries a write that can never succeed.

The lengths are part of the patterns where Kubernetes bounds a part (the name part of a
qualified name, a label value), so one ``matches`` says everything.
"""

from __future__ import annotations

#: RFC 1035 label: lower-case letters, digits and '-', starting with a letter and ending with
#: a letter or digit (a Service name).
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1123 subdomain: labels joined by dots (most object names); at most 253 characters.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SUBDOMAIN_MAX = 253
#: The longest label value, a Service name, and the name part of a qualified name.
LABEL_MAX = 63
#: A label value: empty, or at most 63 letters, digits, '-', '_' and '.', starting and ending
#: with a letter or digit.
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
#: A qualified name (a label or taint key): an optional DNS-subdomain prefix and '/', then a
#: name of at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or
#: digit. The prefix's own limit (253) is :data:`PREFIX_TOO_LONG`.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
#: Matches a qualified name whose prefix is longer than 253 characters.
PREFIX_TOO_LONG = r"^[^/]{254}"
#: The longest qualified name: a 253-character prefix, '/', a 63-character name.
QUALIFIED_NAME_MAX = SUBDOMAIN_MAX + 1 + LABEL_MAX

QUALIFIED_NAME_RULES = (
    "a qualified name such as example.com/rack: an optional DNS-subdomain prefix of at most "
    "253 characters and '/', then a name of at most 63 letters, digits, '-', '_' and '.' that "
    "starts and ends with a letter or digit"
)
LABEL_VALUE_RULES = (
    "at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit "
    "(or empty)"
)
SUBDOMAIN_RULES = (
    "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, "
    "at most 253 characters"
)


def is_qualified_name(var: str) -> str:
    """CEL: ``var`` (a string expression) is a qualified name."""
    return f"({var}.matches('{QUALIFIED_NAME}') && !{var}.matches('{PREFIX_TOO_LONG}'))"


def is_label_value(var: str) -> str:
    """CEL: ``var`` is a label value."""
    return f"{var}.matches('{LABEL_VALUE}')"


def first(collection: str, var: str, bad: str) -> str:
    """CEL: the first element ``var`` of ``collection`` (a list, or a map's keys) for which
    ``bad`` holds; for a message that names the offending key."""
    return f"{collection}.filter({var}, {bad})[0]"


def cel_string(text: str) -> str:
    """``text`` as a CEL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def concat(*parts: str) -> str:
    """CEL: the concatenation of string expressions."""
    return " + ".join(parts)
