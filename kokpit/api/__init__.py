"""kokpit's API: custom resource types defined once in Python (:mod:`.schema`); the CRD YAML
in ``config/crd`` is generated from them by :mod:`.generate`."""
