"""The pure parts of a rollout's plan: batch sizes, the mark a rollout leaves on what it
changed, and which objects the next batch takes.

The mark (:data:`~kokpit.api.v1alpha1.rollout.CHANGE_ANNOTATION`) is written in the same
request that changes an object's package version, so "changed by this rollout" and "carries its
mark" are one fact: a restarted operator counts marks, never its memory. Marks are read from
objects anyone who may write a Machine or Cluster could have edited, so a value that does not
parse is no mark at all (and a parsed ``previous`` is still a valid name the API server
checks again when it is written back).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kokpit.api import names
from kokpit.api.v1alpha1.rollout import CHANGE_ANNOTATION

Object = dict[str, Any]

_UID = r"[0-9a-f-]{1,64}"
_MARK = re.compile(rf"({_UID})/([0-9]{{1,4}})/([0-9]{{1,2}})/({names.DNS1123_SUBDOMAIN[1:-1]})")


@dataclass(frozen=True)
class Change:
    """What a rollout did to one object: in which run and batch, and from which version."""

    uid: str
    attempt: int
    batch: int
    previous: str

    def __str__(self) -> str:
        return f"{self.uid}/{self.attempt}/{self.batch}/{self.previous}"


def change_of(obj: Object) -> Change | None:
    """The rollout mark on ``obj``, or None if it has none (or one that does not parse)."""
    value = (obj["metadata"].get("annotations") or {}).get(CHANGE_ANNOTATION)
    if not isinstance(value, str) or len(value) > 512:
        return None
    match = _MARK.fullmatch(value)
    if match is None:
        return None
    uid, attempt, batch, previous = match.group(1, 2, 3, 4)
    return Change(uid, int(attempt), int(batch), previous)


def batch_size(size: str, total: int) -> int:
    """Objects a batch of ``size`` moves: a count, or a percentage of ``total`` rounded up
    (never 0 while anything is left)."""
    if size.endswith("%"):
        return max(1, math.ceil(total * int(size[:-1]) / 100))
    return int(size)


def planned_sizes(sizes: Sequence[str], total: int) -> list[int]:
    """Each batch's size, the last taking everything left."""
    planned, left = [], total
    for i, size in enumerate(sizes):
        take = left if i == len(sizes) - 1 else min(left, batch_size(size, total))
        planned.append(take)
        left -= take
    return planned


def next_members(candidates: Iterable[Object], room: int) -> list[Object]:
    """The next ``room`` objects to change, in name order (a person can tell from ``kubectl
    get`` which come first)."""
    if room <= 0:
        return []
    return sorted(candidates, key=lambda o: str(o["metadata"]["name"]))[:room]
