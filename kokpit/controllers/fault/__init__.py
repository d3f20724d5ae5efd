"""The fault hub: detection of node faults and their NodeFault records (docs/self-healing.md)."""

from kokpit.controllers.fault.controller import FaultHub, setup
from kokpit.controllers.fault.options import FaultOptions

__all__ = ["FaultHub", "FaultOptions", "setup"]
