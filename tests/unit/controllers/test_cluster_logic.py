import pytest

from kokpit.controllers.cluster.skew import skew_error
from kokpit.providers.controlplane import ComponentPlan


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (None, "v1.36.3", True),  # creation
        ("v1.35.4", "v1.36.3", True),  # one minor up
        ("v1.36.3", "v1.36.4", True),  # a patch
        ("v1.36.3", "v1.35.4", True),  # one minor back (a rollback)
        ("v1.35.4", "v1.37.2", False),  # skips a minor
        ("v1.37.2", "v1.35.4", False),  # two minors back
        ("v1.36.3", "v2.0.0", False),  # a major
    ],
)
def test_version_skew_policy(current: str | None, target: str, allowed: bool) -> None:
    assert (skew_error(current, target) is None) == allowed


def test_a_flag_or_image_change_is_a_different_plan() -> None:
    base = ComponentPlan("kube-apiserver", "v1.36.3")
    assert base.digest == ComponentPlan("kube-apiserver", "v1.36.3", {}).digest
    assert base.digest != ComponentPlan("kube-apiserver", "v1.36.3", {"v": "2"}).digest
    assert (
        base.digest != ComponentPlan("kube-apiserver", "v1.36.3", image="mirror/apiserver").digest
    )
    assert base.digest != ComponentPlan("kube-apiserver", "v1.36.4").digest
