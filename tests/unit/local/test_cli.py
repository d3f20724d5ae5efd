import pytest

from kokpit.cli.main import main, parser


def test_unknown_version_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local", "build", "--version", "v1.19.0"]) == 1
    err = capsys.readouterr().err
    assert "v1.19.0" in err
    assert "v1.36.3" in err
    assert "Traceback" not in err


def test_status_of_a_cluster_that_never_ran(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "--data-dir", str(tmp_path), "status"]) == 3
    assert "not running" in capsys.readouterr().out


def test_risky_operator_capabilities_are_off_unless_asked_for() -> None:
    assert parser().parse_args(["operator", "cluster"]).runtimes == ("kubernetes",)
    assert parser().parse_args(["operator", "machine"]).executors == ("ssh",)
    asked = parser().parse_args(["operator", "cluster", "--runtimes", "kubernetes,process"])
    assert asked.runtimes == ("kubernetes", "process")
    assert parser().parse_args(["operator", "machine", "--executors", "sim"]).executors == ("sim",)


@pytest.mark.parametrize(
    "argv",
    [["operator", "cluster", "--runtimes", "proces"], ["operator", "machine", "--executors", ""]],
)
def test_an_unknown_capability_is_refused_at_start(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(argv)
    assert "expected a comma-separated list of" in capsys.readouterr().err
