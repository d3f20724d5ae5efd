"""The lock file that lets one build of a thing run at a time across processes."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from kokpit.local.assets import exclusive


def try_lock(path: Path) -> bool:
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_the_lock_is_held_inside_the_block_only(tmp_path: Path) -> None:
    lock = tmp_path / "made" / ".thing.lock"
    with exclusive(lock):
        assert not try_lock(lock)  # another open file (another process's) must wait
    assert try_lock(lock)


def test_the_lock_is_released_when_the_block_fails(tmp_path: Path) -> None:
    lock = tmp_path / ".thing.lock"
    with pytest.raises(RuntimeError), exclusive(lock):
        raise RuntimeError("the build failed")
    assert try_lock(lock)
