"""The Machine-Operator (machine desired-state keeper and readiness gating)."""

from kokpit.controllers.machine.controller import (
    FINALIZER,
    MachineOperator,
    node_registrars,
    setup,
)
from kokpit.controllers.machine.options import MachineOptions

__all__ = ["FINALIZER", "MachineOperator", "MachineOptions", "node_registrars", "setup"]
