"""The rollout benchmark's arithmetic: an operator's requests read from its metrics text, and
the requests per Machine taken between two scrapes."""

from __future__ import annotations

from pathlib import Path

from bench import plot, rollout
from kokpit.controllers.rollout import RolloutOptions

METRICS = """\
# HELP rest_client_requests_total Number of HTTP requests.
rest_client_requests_total{code="200",host="127.0.0.1:6443",method="PATCH"} 2010.0
rest_client_requests_total{code="409",host="127.0.0.1:6443",method="PATCH"} 4.0
rest_client_requests_total{code="200",host="127.0.0.1:6443",method="GET"} 7.0
rest_client_request_duration_seconds_sum{host="127.0.0.1:6443",verb="PATCH"} 700.0
rest_client_request_duration_seconds_count{host="127.0.0.1:6443",verb="PATCH"} 2014.0
rest_client_request_duration_seconds_count{host="127.0.0.1:6443",verb="WATCH"} 3.0
controller_runtime_reconcile_total{controller="rollout",result="success"} 18.0
controller_runtime_reconcile_total{controller="rollout",result="requeue_after"} 2.0
workqueue_work_duration_seconds_sum{controller="rollout",name="rollout"} 230.0
"""


def test_requests_are_read_by_method_and_code_apart_from_the_other_figures() -> None:
    found = rollout.parse_metrics(METRICS)
    assert found["PATCH 200"] == 2010
    assert found["PATCH 409"] == 4
    assert found["GET 200"] == 7
    assert found[rollout.RECONCILES] == 20
    assert found[rollout.WORK_SECONDS] == 230
    assert found[rollout.PATCHES] == 2014  # the WATCH durations are not patches
    assert found[rollout.PATCH_SECONDS] == 700


def test_requests_per_machine_are_what_was_made_between_the_scrapes() -> None:
    before = {"PATCH 200": 10.0, "GET 200": 7.0, rollout.RECONCILES: 3.0}
    after = rollout.parse_metrics(METRICS)
    per = rollout.requests_per_machine(before, after, 2000)
    assert per["by_method"] == {"PATCH 200": 1.0, "PATCH 409": 0.002}  # no GET was made since
    assert per["total"] == 1.002


def test_the_batches_are_equal_shares_with_the_canary_first() -> None:
    spec = rollout.rollout("to-v2", "bench-v2", 5, 3600)["spec"]
    assert [b["size"] for b in spec["batches"]] == ["20%"] * 5
    assert all(set(b) == {"size"} for b in spec["batches"])  # no pause, no manual gate
    assert "analysis" not in spec


def test_the_fleet_grows_through_the_sizes_and_the_settings_vary_at_the_largest() -> None:
    default = RolloutOptions().max_concurrent_changes
    assert rollout.plan([10_000, 1_000, 3_000], [default, 64, default]) == [
        (1_000, default),
        (3_000, default),
        (10_000, default),
        (10_000, 64),
        (10_000, default),
    ]
    assert rollout.plan([500], [8]) == [(500, 8)]


def test_the_cost_curves_take_the_first_rollout_at_the_default_at_each_size(tmp_path: Path) -> None:
    def one(machines: int, changes: int, seconds: float) -> dict[str, object]:
        requests = {"total": 1.0}
        return {
            "machines": machines,
            "max_concurrent_changes": changes,
            "total_seconds": seconds,
            "requests_per_machine": {"rollout_operator": requests, "machine_operator": requests},
            "rollout_operator": {"cpu_seconds": machines / 500},
        }

    default = RolloutOptions().max_concurrent_changes
    runs = [one(1000, default, 20.0), one(3000, 64, 888.0), one(3000, default, 55.0)]
    runs += [one(10_000, default, 150.0), one(10_000, 64, 999.0)]  # not the default: not drawn
    paths = plot.risk({"rollout": {"rollouts": runs, "batches": 5}}, tmp_path)
    assert [p.name for p in paths] == ["rollout-seconds.svg", "rollout-cost-per-machine.svg"]
    seconds = paths[0].read_text()
    assert "150" in seconds
    assert "999" not in seconds
    assert "888" not in seconds
    assert "5 batches" in seconds
