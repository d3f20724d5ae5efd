"""A replica's leader-election identity."""

from __future__ import annotations

import socket

from kokpit.runtime.leader import new_identity


def test_each_process_start_has_an_identity_of_its_own_on_the_same_host() -> None:
    # A container restarted in its pod has the same hostname and is PID 1 again: an identity
    # made of the two would let it take its dead predecessor's Lease as its own at once.
    first, second = new_identity(), new_identity()
    assert first != second
    assert first.startswith(f"{socket.gethostname()}_")
    assert second.startswith(f"{socket.gethostname()}_")
