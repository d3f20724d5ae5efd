"""Certificates, keys and kubeconfigs: product code shared by the operators (a business
cluster's PKI and its credentials) and the local meta-cluster, which depends on it, never the
other way round."""

from kokpit.pki.certificates import (
    ADMIN,
    CLIENTS,
    CONTROLLER_MANAGER,
    KWOK,
    MACHINE_OPERATOR,
    PKI,
    SCHEDULER,
    Identity,
)

__all__ = [
    "ADMIN",
    "CLIENTS",
    "CONTROLLER_MANAGER",
    "KWOK",
    "MACHINE_OPERATOR",
    "PKI",
    "SCHEDULER",
    "Identity",
]
