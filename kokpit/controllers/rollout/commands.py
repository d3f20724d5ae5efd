"""A person's commands to a rollout, through the annotation ``kokpit.io/rollout-command``
(which ``kokpit rollout pause|resume|retry|skip|abort`` sets):

- ``pause``: stop where it is (nothing more is changed) until ``resume``;
- ``resume``: go on after a pause, past a batch's manual gate, or after an analysis that could
  not measure; the current batch's health timeout and analysis start over, since the time spent
  paused says nothing about the version;
- ``skip``: pass the current batch without its remaining checks, pause and gate (its objects
  are still changed): a person vouches for it;
- ``abort``: stop and move back everything this run changed;
- ``retry``: start an Aborted rollout again from its first batch (a new attempt: the objects
  the aborted run changed are candidates again).

The command's effect is stored *before* the annotation is removed, so a crash in between
applies it twice (the same result), never zero times. A command that does not fit the phase
is refused with an Event, and removed.
"""

from __future__ import annotations

from kokpit.api.conditions import now
from kokpit.api.v1alpha1.rollout import COMMAND_ANNOTATION
from kokpit.controllers.rollout.phases import Progress
from kokpit.controllers.rollout.scope import RolloutScope

#: The phases in which each command does something.
ALLOWED = {
    "pause": ("Progressing",),
    "resume": ("Paused",),
    "skip": ("Progressing", "Paused"),
    "abort": ("Progressing", "Paused"),
    "retry": ("Aborted",),
}


class Commands:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    async def apply(self, scope: RolloutScope) -> bool:
        """The first phase: act on a pending command (the workflow runs on after it)."""
        annotations = scope.metadata.get("annotations") or {}
        command = annotations.get(COMMAND_ANNOTATION)
        if command is None:
            return True
        phase = scope.phase or "Progressing"
        if command not in ALLOWED:
            scope.event("Warning", "UnknownCommand", f"{command[:64]!r}: use {', '.join(ALLOWED)}")
        elif phase not in ALLOWED[command]:
            scope.event("Warning", "CommandRefused", f"{command}: nothing to {command} in {phase}")
        else:
            await self._run(scope, command)
        await scope.persist()  # the command's effect, before the command is gone
        del annotations[COMMAND_ANNOTATION]
        return True

    async def _run(self, scope: RolloutScope, command: str) -> None:
        status = scope.status
        if command == "pause":
            status.update(phase="Paused", pausedReason="PausedByPerson")
            scope.event("Normal", "Paused", "paused by a person")
        elif command == "resume":
            self._restart_checks(scope)
            if scope.batch["state"] == "Pausing":
                scope.batch["approved"] = True  # past its manual gate
            status.update(phase="Progressing", pausedReason=None)
            scope.event("Normal", "Resumed", f"resumed by a person at batch {scope.index}")
        elif command == "skip":
            scope.batch["skipped"] = True
            status.update(phase="Progressing", pausedReason=None)
            scope.event("Normal", "Skipped", f"batch {scope.index}'s checks skipped by a person")
        elif command == "abort":
            await self._progress.abort(scope, "aborted by a person")
        elif command == "retry":
            attempt = scope.attempt + 1
            for key in ("total", "abortReason", "abortedAt", "pausedReason"):
                status.pop(key, None)
            status.update(
                phase="Progressing", attempt=attempt, currentBatch=0, batches=[], conditions=[]
            )
            scope.event(
                "Normal", "Retried", f"started again from the first batch (attempt {attempt})"
            )

    @staticmethod
    def _restart_checks(scope: RolloutScope) -> None:
        batch = scope.batch
        if batch["state"] == "Verifying":
            batch["startedAt"] = now()
        elif batch["state"] == "Analyzing":
            batch.update(
                analysisStartedAt=now(), measured=0, failedMeasurements=0, errorMeasurements=0
            )
