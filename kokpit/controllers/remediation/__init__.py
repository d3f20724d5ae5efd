"""The Remediation operator: repairs faulty nodes up a ladder of actions, within storm limits,
and hands them to a person when the ladder is exhausted (see :mod:`.controller`)."""

from kokpit.controllers.remediation.controller import RemediationOperator, setup
from kokpit.controllers.remediation.options import RemediationOptions
from kokpit.controllers.remediation.scope import FINALIZER

__all__ = ["FINALIZER", "RemediationOperator", "RemediationOptions", "setup"]
