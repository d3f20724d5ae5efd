"""The Machine-Operator (machine desired-state keeper and readiness gating)."""

from kokpit.controllers.machine.controller import (
    FINALIZER,
    MACHINES,
    PACKAGE_VERSIONS,
    MachineOptions,
    MachineReconciler,
    setup,
)

__all__ = [
    "FINALIZER",
    "MACHINES",
    "PACKAGE_VERSIONS",
    "MachineOptions",
    "MachineReconciler",
    "setup",
]
