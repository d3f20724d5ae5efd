"""The quiet period of admission: nothing in a scope starts until its unhealthy nodes have
stopped growing for ``delay`` seconds, so a storm is counted whole before any of it starts.

What is watched is the set of the scope's unhealthy nodes as the storm stop counts them (not
Ready, reporting a fault condition, or with an Active NodeFault), sampled on each admission
pass. The set reaches the operator through the cluster cache within a second of the nodes'
writes, whereas the hub records a storm's faults one reconcile at a time (over seconds at
ten thousand nodes). Counting the quiet from the remediations' creation made the first fault of
a zone wait for the hub to record the zone's last one; counted from the nodes, a fault the hub
records after its zone went quiet starts at once, and its scope's count already holds it.

Only growth restarts the quiet: a node that recovers does not, and one that fails again does.
Growth that never stops (nodes joining a large cluster, a rollout rebooting nodes one after
another) would hold a scope's remediations forever, so a scope waits at most
:data:`MAX_WAIT_DELAYS` delays from the first growth after it was last quiet; then it is judged
as it is, and the storm stop still holds it if it is below its minimum.
The times are this process's own (monotonic): a restarted operator has seen nothing, so every
scope with unhealthy nodes waits the delay once more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kokpit.controllers.remediation.storm import Health, Scope

#: A scope not looked at for this many delays is forgotten: seen again, it waits afresh.
FORGET_AFTER_DELAYS = 10
#: The longest a scope whose unhealthy nodes keep growing waits, in delays, from its first
#: growth after it was last quiet.
MAX_WAIT_DELAYS = 10


@dataclass
class _Seen:
    unhealthy: frozenset[str]
    #: When the set last grew.
    grew: float
    #: When it first grew after it was last quiet for the delay.
    since: float
    #: When it was last looked at.
    looked: float


class QuietPeriod:
    """When each scope's unhealthy nodes last grew, as this process saw them."""

    def __init__(self, delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self._clock = clock
        self._seen: dict[Scope, _Seen] = {}
        self._swept = clock()

    def observe(self, health: Health) -> float:
        """Record the scope's unhealthy nodes as they are now; the seconds until it has been
        quiet for the delay (0: it has)."""
        now = self._clock()
        self._forget(now)
        seen = self._seen.get(health.scope)
        before = seen.unhealthy if seen is not None else frozenset()
        if health.unhealthy - before:
            grew = now
            quiet = seen is None or now - seen.grew >= self.delay
            since = now if quiet or seen is None else seen.since
        elif seen is not None:
            grew, since = seen.grew, seen.since
        else:
            return 0.0  # no unhealthy node, none before: nothing is arriving
        self._seen[health.scope] = _Seen(health.unhealthy, grew, since, now)
        until_quiet = self.delay - (now - grew)
        until_cap = MAX_WAIT_DELAYS * self.delay - (now - since)
        return max(0.0, min(until_quiet, until_cap))

    def _forget(self, now: float) -> None:
        horizon = FORGET_AFTER_DELAYS * max(self.delay, 1.0)
        if now - self._swept < horizon:
            return
        self._swept = now
        stale = [scope for scope, seen in self._seen.items() if now - seen.looked > horizon]
        for scope in stale:
            del self._seen[scope]
