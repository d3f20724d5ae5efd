"""The Rollout-Operator: gray-scale rollouts of package versions across Machines and
Clusters, with health checks, analysis of business metrics, and rollback (see
:mod:`.controller`)."""

from kokpit.controllers.rollout.analysis import MetricReader
from kokpit.controllers.rollout.controller import RolloutOperator, setup
from kokpit.controllers.rollout.options import RolloutOptions

__all__ = ["MetricReader", "RolloutOperator", "RolloutOptions", "setup"]
