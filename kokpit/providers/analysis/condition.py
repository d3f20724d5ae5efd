"""The condition language of an analysis: when a measured value counts as success or failure.

In the spirit of Argo Rollouts' AnalysisTemplate (``successCondition: result[0] >= 0.95``), but
deliberately tiny, because a condition is written by whoever may create a Rollout and is then
evaluated by the operator: no ``eval``, no functions, no variables but ``result``. A condition
is one or more comparisons of ``result`` with a number, joined by ``&&`` and ``||``::

    result >= 0.95
    result < 2.5
    result >= 0.9 && result <= 1
    result < 0.1 || result > 10

``&&`` binds tighter than ``||`` (as in CEL, Go and C); there are no parentheses. Numbers are
decimal, optionally signed and with an exponent (``1e-3``).

:data:`CONDITION_PATTERN` (declared with the Rollout's API types) is the whole grammar as one
regular expression that means the same in
RE2 (a CRD's CEL ``self.matches(...)``) and in Python's :func:`re.fullmatch`, so the API server
refuses a malformed condition when the object is written, with a message a person understands,
and the operator parses exactly the language the API server let through.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from kokpit.api.v1alpha1.rollout import (
    CONDITION_MAX_LENGTH,
    CONDITION_NUMBER,
    CONDITION_OPERATOR,
    CONDITION_PATTERN,
)

__all__ = ["CONDITION_PATTERN", "Comparison", "Condition", "ConditionError", "evaluate", "parse"]

#: Conditions longer than this are refused (the CRD states it as maxLength too).
MAX_LENGTH = CONDITION_MAX_LENGTH

_COMPARISON_RE = re.compile(
    rf"^ *result *(?P<op>{CONDITION_OPERATOR}) *(?P<number>{CONDITION_NUMBER}) *$"
)
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class ConditionError(ValueError):
    """A condition outside the language; the message says what is wrong, quoting it."""


@dataclass(frozen=True)
class Comparison:
    """``result <operator> <threshold>``."""

    operator: str
    threshold: float

    def holds(self, result: float) -> bool:
        return _OPERATORS[self.operator](result, self.threshold)


@dataclass(frozen=True)
class Condition:
    """Alternatives (``||``), each a conjunction (``&&``) of comparisons."""

    alternatives: tuple[tuple[Comparison, ...], ...]

    def holds(self, result: float) -> bool:
        """Whether ``result`` meets the condition; NaN meets no comparison (not even ``!=``),
        so a value that is not a number never passes for success."""
        if math.isnan(result):
            return False
        return any(all(c.holds(result) for c in terms) for terms in self.alternatives)


def parse(condition: str) -> Condition:
    """The condition ``condition``; raises :class:`ConditionError` if it is not in the
    language."""
    if len(condition) > MAX_LENGTH:
        raise ConditionError(f"a condition is at most {MAX_LENGTH} characters long")
    if not re.fullmatch(CONDITION_PATTERN, condition):
        raise ConditionError(
            f"{condition[:80]!r} is not a condition: write comparisons of result with a "
            "number (>=, <=, >, <, ==, !=), joined by && or ||, such as 'result >= 0.95'"
        )
    alternatives = []
    for alternative in condition.split("||"):
        terms = []
        for text in alternative.split("&&"):
            match = _COMPARISON_RE.fullmatch(text)
            if match is None:  # unreachable once the whole pattern matched; kept total
                raise ConditionError(f"{text.strip()!r} is not a comparison of result")
            threshold = float(match["number"])
            if math.isinf(threshold):
                raise ConditionError(f"{match['number']} is too large a number")
            terms.append(Comparison(match["op"], threshold))
        alternatives.append(tuple(terms))
    return Condition(tuple(alternatives))


def evaluate(condition: str, result: float) -> bool:
    """Whether ``result`` meets ``condition`` (raises :class:`ConditionError` if malformed)."""
    return parse(condition).holds(result)
