"""What ``kokpit migrate-storage`` says per CRD (its behaviour against a real API server is
tested in tests/e2e/test_upgrade.py)."""

from __future__ import annotations

from kokpit.cli.main import parser
from kokpit.cli.migrate import Outcome, run


def test_it_is_a_kokpit_command() -> None:
    args = parser().parse_args(["migrate-storage", "--dry-run"])
    assert args.run is run
    assert args.dry_run


def test_a_migrated_crd_says_what_was_written_and_the_stored_versions() -> None:
    outcome = Outcome("machines.kokpit.io", "v1alpha2", ["v1alpha1", "v1alpha2"], objects=5)
    outcome.rewritten, outcome.moved_on, outcome.stored_after = 3, 1, ["v1alpha2"]
    assert str(outcome) == (
        "machines.kokpit.io: 5 objects at v1alpha2 (3 rewritten, 1 already stored there, "
        "1 changed or deleted meanwhile); storedVersions [v1alpha1, v1alpha2] -> [v1alpha2]"
    )


def test_a_refused_object_is_named_and_the_stored_versions_are_left() -> None:
    outcome = Outcome("machines.kokpit.io", "v1alpha2", ["v1alpha1", "v1alpha2"], objects=1)
    outcome.refused.append("Machine fleet/host-1: frozen")
    text = str(outcome)
    assert text.startswith(
        "machines.kokpit.io: 1 object at v1alpha2 (0 rewritten, 0 already stored there, "
        "0 changed or deleted meanwhile); storedVersions [v1alpha1, v1alpha2]\n"
    )
    assert "  refused: Machine fleet/host-1: frozen\n" in text
    assert text.endswith("then run again")
