import pytest

from kokpit.local.versions import DEFAULT_RELEASE, RELEASES, Release, UnknownReleaseError, release


@pytest.mark.parametrize(
    ("asked", "expected"),
    [(None, DEFAULT_RELEASE.version), ("v1.35.4", "v1.35.4"), ("1.36.3", "v1.36.3")],
)
def test_release_lookup(asked: str | None, expected: str) -> None:
    assert release(asked).version == expected


def test_unknown_version_lists_what_can_be_built() -> None:
    with pytest.raises(UnknownReleaseError) as e:
        release("v1.20.0")
    for r in RELEASES:
        assert r.version in str(e.value)
    assert "v1.20.0" in str(e.value)


def test_staging_version_matches_release() -> None:
    assert Release("v1.36.3").staging_version == "v0.36.3"
    assert Release("v1.35.4").minor == 35
