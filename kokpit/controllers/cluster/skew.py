"""Which control-plane version changes the Kubernetes version-skew policy allows.

Control planes move one minor version at a time: an upgrade may go up by at most one minor,
and a rollback (a downgrade) may go back by at most one minor, the version the cluster just
came from. Anything else needs ``spec.allowVersionSkip``.
"""

from __future__ import annotations

import re


def minor(version: str) -> tuple[int, int]:
    found = re.match(r"^v(\d+)\.(\d+)\.\d+$", version)
    if found is None:
        raise ValueError(f"not a Kubernetes version: {version!r}")
    return int(found.group(1)), int(found.group(2))


def skew_error(current: str | None, target: str) -> str | None:
    """Why moving from ``current`` to ``target`` is not allowed, or None if it is."""
    if current is None:
        return None
    (cur_major, cur_minor), (tgt_major, tgt_minor) = minor(current), minor(target)
    if cur_major != tgt_major:
        return f"{current} → {target} changes the major version"
    if tgt_minor > cur_minor + 1:
        return (
            f"{current} → {target} skips {tgt_minor - cur_minor - 1} minor version(s); "
            "upgrade one minor at a time"
        )
    if tgt_minor < cur_minor - 1:
        return (
            f"{current} → {target} goes back {cur_minor - tgt_minor} minor versions; "
            "a control plane can return at most one minor"
        )
    return None
