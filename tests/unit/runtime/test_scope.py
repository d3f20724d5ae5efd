"""ObjectScope's clock: how long an object has been deleted, never more than it really has."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kokpit.runtime import ObjectScope


def deleted_at(when: datetime) -> ObjectScope:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")  # whole seconds, as the API server keeps it
    return ObjectScope({"metadata": {"name": "m", "deletionTimestamp": stamp}, "spec": {}})


def test_an_object_not_being_deleted_has_been_deleted_for_no_time() -> None:
    assert ObjectScope({"metadata": {"name": "m"}, "spec": {}}).seconds_deleted() == 0.0


def test_the_deletion_is_counted_from_the_end_of_its_second() -> None:
    """Deleted at 10.9 s, stamped 10 s: at 12.95 s only 2.05 s have passed, and a 3 s timeout
    must not be over (it was, counted from the stamp: 2.95 s, and a drain gave up early)."""
    now = datetime.now(UTC)
    just_now = deleted_at(now)
    assert just_now.seconds_deleted() <= (now - now.replace(microsecond=0)).total_seconds()
    assert just_now.seconds_deleted() < 1.0
    earlier = deleted_at(now - timedelta(seconds=10))
    assert 8.9 <= earlier.seconds_deleted() <= 10.0
