"""kokpit.io/v1alpha1: the meta-cluster's custom resources."""

from kokpit.api.v1alpha1.cluster import CLUSTER, ClusterSpec, ClusterStatus
from kokpit.api.v1alpha1.clusterpackageversion import (
    CLUSTER_PACKAGE_VERSION,
    ClusterPackageVersionSpec,
)
from kokpit.api.v1alpha1.machine import MACHINE, MachineSpec, MachineStatus
from kokpit.api.v1alpha1.machinepackageversion import (
    MACHINE_PACKAGE_VERSION,
    MachinePackageVersionSpec,
)
from kokpit.api.v1alpha1.nodefault import NODE_FAULT, NodeFaultSpec, NodeFaultStatus
from kokpit.api.v1alpha1.remediation import REMEDIATION, RemediationSpec, RemediationStatus
from kokpit.api.v1alpha1.remediationpolicy import (
    REMEDIATION_POLICY,
    RemediationPolicySpec,
    RemediationPolicyStatus,
)
from kokpit.api.v1alpha1.riskledger import RISK_LEDGER, RiskLedgerSpec, RiskLedgerStatus
from kokpit.api.v1alpha1.riskpolicy import RISK_POLICY, RiskPolicySpec, RiskPolicyStatus
from kokpit.api.v1alpha1.rollout import ROLLOUT, RolloutSpec, RolloutStatus

GROUP = "kokpit.io"
VERSION = "v1alpha1"
KINDS = (
    CLUSTER_PACKAGE_VERSION,
    CLUSTER,
    MACHINE_PACKAGE_VERSION,
    MACHINE,
    NODE_FAULT,
    REMEDIATION_POLICY,
    REMEDIATION,
    RISK_POLICY,
    RISK_LEDGER,
    ROLLOUT,
)

# The descriptors the client addresses these kinds with, derived from the types.
CLUSTER_PACKAGE_VERSIONS = CLUSTER_PACKAGE_VERSION.resource
CLUSTERS = CLUSTER.resource
MACHINE_PACKAGE_VERSIONS = MACHINE_PACKAGE_VERSION.resource
MACHINES = MACHINE.resource
NODE_FAULTS = NODE_FAULT.resource
REMEDIATION_POLICIES = REMEDIATION_POLICY.resource
REMEDIATIONS = REMEDIATION.resource
RISK_POLICIES = RISK_POLICY.resource
RISK_LEDGERS = RISK_LEDGER.resource
ROLLOUTS = ROLLOUT.resource

__all__ = [
    "CLUSTER",
    "CLUSTERS",
    "CLUSTER_PACKAGE_VERSION",
    "CLUSTER_PACKAGE_VERSIONS",
    "GROUP",
    "KINDS",
    "MACHINE",
    "MACHINES",
    "MACHINE_PACKAGE_VERSION",
    "MACHINE_PACKAGE_VERSIONS",
    "NODE_FAULT",
    "NODE_FAULTS",
    "REMEDIATION",
    "REMEDIATIONS",
    "REMEDIATION_POLICIES",
    "REMEDIATION_POLICY",
    "RISK_LEDGER",
    "RISK_LEDGERS",
    "RISK_POLICIES",
    "RISK_POLICY",
    "ROLLOUT",
    "ROLLOUTS",
    "VERSION",
    "ClusterPackageVersionSpec",
    "ClusterSpec",
    "ClusterStatus",
    "MachinePackageVersionSpec",
    "MachineSpec",
    "MachineStatus",
    "NodeFaultSpec",
    "NodeFaultStatus",
    "RemediationPolicySpec",
    "RemediationPolicyStatus",
    "RemediationSpec",
    "RemediationStatus",
    "RiskLedgerSpec",
    "RiskLedgerStatus",
    "RiskPolicySpec",
    "RiskPolicyStatus",
    "RolloutSpec",
    "RolloutStatus",
]
