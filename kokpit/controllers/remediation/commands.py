"""A person's commands to a remediation, through the annotation ``kokpit.io/remediation-command``
(which ``kokpit remediation resume|close`` sets):

- ``resume``: climb the ladder again from its first rung (after cordoning and draining again,
  both quick when nothing changed). A Started attempt is ended as Failed, so the first rung
  runs anew: the person decided it may.
- ``close``: end the remediation; the node kokpit cordoned is uncordoned; phase Closed.

The command is applied to the status and stored *before* the annotation is removed, so a crash
in between applies it twice (the same result), never zero times. Unknown commands, and commands
to a finished remediation, are refused with an Event, and removed.
"""

from __future__ import annotations

from kokpit.api.conditions import now
from kokpit.api.v1alpha1.remediation import COMMAND_ANNOTATION
from kokpit.controllers.remediation.phases import Workflow
from kokpit.controllers.remediation.scope import FINISHED, RemediationScope

RESUMABLE = ("Repairing", "Verifying", "Escalated")


class Commands:
    def __init__(self, workflow: Workflow) -> None:
        self._workflow = workflow

    async def apply(self, scope: RemediationScope) -> bool:
        """The Outline phase: act on a pending command (always lets the workflow run on)."""
        annotations = scope.metadata.get("annotations") or {}
        command = annotations.get(COMMAND_ANNOTATION)
        if command is None:
            return True
        if scope.phase in FINISHED:
            scope.event("Warning", "CommandRefused", f"{command!r}: the remediation is finished")
        elif command == "resume" and scope.phase in RESUMABLE:
            self._resume(scope)
        elif command == "resume":
            scope.event("Warning", "CommandRefused", f"resume: nothing to resume in {scope.phase}")
        elif command == "close":
            if not await self._workflow.close(scope):
                return True  # the node could not be uncordoned yet: the annotation stays
        else:
            scope.event("Warning", "UnknownCommand", f"{command[:64]!r}: use resume or close")
        await scope.persist()  # the command's effect, before the command is gone
        del annotations[COMMAND_ANNOTATION]
        return True

    @staticmethod
    def _resume(scope: RemediationScope) -> None:
        last = scope.last_attempt
        if last is not None and last.get("state") == "Started":
            last.update(state="Failed", finishedAt=now(), message="ended by a person (resume)")
        scope.status["step"] = 0
        scope.phase = "Cordoning"
        scope.event(
            "Normal", "Resumed", "a person resumed: the ladder is climbed again from rung 0"
        )
