"""Certificates, keys and kubeconfigs: product code shared by the operators (a business
cluster's PKI and its credentials) and the local meta-cluster, which depends on it, never the
other way round."""

from kokpit.pki.certificates import (
    ADMIN,
    CA_VALIDITY,
    CLIENTS,
    CONTROLLER_MANAGER,
    COREDNS,
    ETCD_CLIENT,
    ETCD_MATERIAL,
    KWOK,
    LEAF_VALIDITY,
    MACHINE_OPERATOR,
    MATERIAL,
    PKI,
    SCHEDULER,
    Identity,
)

__all__ = [
    "ADMIN",
    "CA_VALIDITY",
    "CLIENTS",
    "CONTROLLER_MANAGER",
    "COREDNS",
    "ETCD_CLIENT",
    "ETCD_MATERIAL",
    "KWOK",
    "LEAF_VALIDITY",
    "MACHINE_OPERATOR",
    "MATERIAL",
    "PKI",
    "SCHEDULER",
    "Identity",
]
