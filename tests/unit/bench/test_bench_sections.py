"""A result written section by section keeps what it does not rewrite (the real-node section
of ``cluster.json`` runs apart from the KWOK scale run), each section with its own run; and
the pod processes read from ``/proc`` are this host's own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import pytest

from bench import machine, pods

KNOWN = ("scale", "process", "real")


def test_a_section_run_alone_keeps_the_others_with_the_run_that_made_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "RESULTS", tmp_path)
    earlier = {
        "benchmark": "cluster",
        "when": "2026-11-27T02:12:13Z",
        "machine": {"cpus": 2},
        "commit": "old",
        "code_changed": False,
        "scale": {"clusters": 500},
        "process": {"total": 17.1},
        "anchor": "old words",
    }
    (tmp_path / "cluster.json").write_text(json.dumps(earlier))

    path = machine.write_sections(
        "cluster", {"real": {"clusters": 10}}, known=KNOWN, common={"anchor": "new words"}
    )

    record = json.loads(path.read_text())
    assert record["scale"] == {
        "run": {
            "when": earlier["when"],
            "machine": {"cpus": 2},
            "commit": "old",
            "code_changed": False,
        },
        "clusters": 500,
    }
    assert record["process"]["run"]["commit"] == "old"
    assert record["real"]["clusters"] == 10
    assert record["real"]["run"]["commit"] != "old"
    assert record["real"]["run"]["when"] == record["when"] != earlier["when"]
    assert record["anchor"] == "new words"

    # Rewriting the scale section later keeps the real one as it was.
    again = machine.write_sections("cluster", {"scale": {"clusters": 100}}, known=KNOWN, common={})
    record2 = json.loads(again.read_text())
    assert record2["scale"]["clusters"] == 100
    assert record2["real"] == record["real"]
    assert record2["process"] == record["process"]


def test_a_quick_run_writes_apart_from_the_quoted_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "RESULTS", tmp_path)
    monkeypatch.setattr(machine, "QUICK", tmp_path / "quick")
    path = machine.write_sections("cluster", {"real": {}}, known=KNOWN, common={}, quick=True)
    assert path == tmp_path / "quick" / "cluster.json"
    assert not (tmp_path / "cluster.json").exists()


def test_a_process_reads_its_own_resident_memory_and_cpu() -> None:
    rss, cpu = pods.read(str(os.getpid()))
    assert 1 < rss < 4096
    assert cpu > 0


@pytest.mark.parametrize(
    "line",
    [
        "4:memory:/kokpit-0/kubepods/besteffort/pod0a1b2c3d-0000-4111-8222-123456789abc/f00",
        "0::/kubepods.slice/kubepods-pod0a1b2c3d_0000_4111_8222_123456789abc.slice/cri-f00",
    ],
)
def test_a_pod_is_found_by_its_uid_in_a_cgroup_path_of_either_driver(line: str) -> None:
    found = pods.POD_UID.search(line)
    assert found is not None
    assert found.group(1).replace("_", "-") == "0a1b2c3d-0000-4111-8222-123456789abc"


def test_the_rollout_and_the_guard_share_risk_json_without_erasing_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine, "RESULTS", tmp_path)
    guard = {"levels": {"200x1": {"p99_ms": 61.6}}}
    (tmp_path / "risk.json").write_text(
        json.dumps({"benchmark": "risk", "commit": "guard-run", **guard})
    )

    path = machine.write_section("risk", "rollout", {"total_seconds": 80.0})

    record = json.loads(path.read_text())
    assert record["levels"] == guard["levels"]
    assert record["commit"] == "guard-run"  # the guard's run, not the rollout's
    assert record["rollout"]["total_seconds"] == 80.0
    assert record["rollout"]["run"]["commit"] != "guard-run"

    # The guard's benchmark rewrites the whole file, and keeps the rollout's section.
    again = machine.write("risk", {"levels": {}}, keep=("rollout",))
    record2 = json.loads(again.read_text())
    assert record2["levels"] == {}
    assert record2["rollout"] == record["rollout"]
    assert record2["commit"] != "guard-run"


def test_a_run_records_the_commit_it_started_from_not_one_made_while_it_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A benchmark runs the code it loaded when it started; a commit made during a run of an
    hour must not be recorded as the code that ran."""
    head = ["started-here"]

    def git(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        out = head[0] if args[1] == "rev-parse" else ""
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(machine, "_started", None)
    monkeypatch.setattr(subprocess, "run", git)
    monkeypatch.setattr("sys.argv", ["bench"])
    machine.parse_args(argparse.ArgumentParser(), quick={})
    head[0] = "committed-meanwhile"
    assert machine.run_record()["commit"] == "started-here"
