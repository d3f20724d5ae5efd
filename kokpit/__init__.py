"""kokpit: a fleet manager for Kubernetes in the kube-on-kube style.

The package is layered, with imports pointing only down:

- ``kokpit.api``          custom resource types (defined once, CRD YAML generated from them)
- ``kokpit.runtime``      controller runtime: client, informers, queues, manager; no business logic
- ``kokpit.controllers``  one package per operator
- ``kokpit.providers``    edges to the outside world behind small protocols
- ``kokpit.local``        the embedded local meta-cluster (a real Kubernetes control plane)
- ``kokpit.cli``          the ``kokpit`` command

See ``docs/architecture.md`` for a paragraph on each layer.
"""

__version__ = "0.1.0"
