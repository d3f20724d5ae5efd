import pytest

from kokpit.cli.main import main


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
