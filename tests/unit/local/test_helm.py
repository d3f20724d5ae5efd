"""helm for the chart's tests, built from its Go module into the assets cache
(kokpit/local/helm.py)."""

from pathlib import Path

import pytest

from kokpit.local import helm
from kokpit.local.build import BuildError

GOMOD = """module helm.sh/helm/v3

go 1.26.0

require (
\tk8s.io/api v0.37.0
\tk8s.io/client-go v0.37.0
)
"""


def test_ldflags_set_helms_version_and_the_kubernetes_version_after_its_client() -> None:
    flags = helm.ldflags(GOMOD)
    assert f"-X helm.sh/helm/v3/internal/version.version={helm.HELM_VERSION}" in flags
    assert "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" in flags
    assert "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" in flags


def test_a_gomod_without_client_go_is_refused() -> None:
    with pytest.raises(BuildError, match="client-go"):
        helm.ldflags("module helm.sh/helm/v3\n")


def test_a_built_helm_is_used_and_nothing_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOKPIT_CACHE", str(tmp_path))
    assert helm.find() is None
    # A build killed before its rename leaves only a private directory: not a helm.
    partial = helm.directory().with_name(f".{helm.HELM_VERSION}.partial-1")
    partial.mkdir(parents=True)
    (partial / "helm").write_text("#!/bin/sh\n")
    assert helm.find() is None

    def no_build(dest: Path, progress: object) -> None:
        raise AssertionError("built although helm is there")

    helm.directory().mkdir(parents=True)
    binary = helm.directory() / "helm"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(helm, "build", no_build)
    assert helm.ensure(progress=lambda _: None) == binary
