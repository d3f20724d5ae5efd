"""The arithmetic the benchmark reports rest on: spreads, within-run ratios, run order,
kopf's settings, and the SVG plots drawn from a result."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from bench import plot, stats
from bench.kopf_tuning import tunings
from bench.runtime import order
from bench.runtime_targets import KopfTuning


def test_spread_is_median_min_max() -> None:
    assert stats.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_summarize_keeps_only_figures_every_run_has() -> None:
    runs: list[dict[str, Any]] = [
        {"run": 0, "converge_s": 2.0, "note": "x"},
        {"run": 1, "converge_s": 4.0},
    ]
    summary = stats.summarize(runs)
    assert summary["converge_s"]["median"] == 3.0
    assert "note" not in summary


def test_ratio_pairs_runs_not_medians() -> None:
    # Run 0 was slow for both targets, run 1 fast for both: the ratio is 2 in each run,
    # whereas a ratio of medians would mix a slow run of one with a fast run of the other.
    kopf = [{"converge_s": 20.0}, {"converge_s": 4.0}]
    kokpit = [{"converge_s": 10.0}, {"converge_s": 2.0}]
    assert stats.ratio(kopf, kokpit, "converge_s") == {
        "median": 2.0,
        "min": 2.0,
        "max": 2.0,
        "n": 2,
    }
    assert stats.ratio(kopf, [{}, {}], "converge_s") is None


def test_every_target_takes_every_position() -> None:
    targets = ["floor", "kokpit", "kopf"]
    firsts = {order(targets, run)[0] for run in range(3)}
    assert firsts == set(targets)
    assert sorted(order(targets, 1)) == sorted(targets)


def test_kopf_tuning_parses_and_rejects_unknown_keys() -> None:
    tuning = KopfTuning.parse("worker_limit=16,idle_timeout=0.5")
    assert (tuning.worker_limit, tuning.idle_timeout, tuning.connections) == (16, 0.5, 64)
    assert KopfTuning.parse("") == KopfTuning()
    with pytest.raises(ValueError, match="unknown kopf settings \\['workers'\\]"):
        KopfTuning.parse("workers=3")


def test_kopf_tuning_without_a_worker_limit_is_kopfs_default() -> None:
    unlimited = KopfTuning.parse("worker_limit=none,idle_timeout=5.0,connections=0")
    assert unlimited.worker_limit is None
    assert KopfTuning.parse(unlimited.text()) == unlimited


def test_the_sweep_tries_kopf_without_a_worker_limit() -> None:
    candidates = [KopfTuning.parse(text) for text in tunings()]
    assert len(set(candidates)) == len(candidates)
    unlimited = [c for c in candidates if c.worker_limit is None]
    assert {(c.idle_timeout, c.connections) for c in unlimited} == {(5.0, 0), (5.0, 64)}
    assert {c.worker_limit for c in candidates} == {None, 16, 64, 256}
    # One candidate shows a worker limit with kopf's default idle timeout.
    assert [c.worker_limit for c in candidates if c.idle_timeout == 5.0] == [None, None, 64]


def test_runtime_plots_are_svg_with_one_line_per_target(tmp_path: Path) -> None:
    summary = {"kokpit": {"converge_s": {"median": 1.0}, "peak_rss_mib": {"median": 60.0}}}
    result = {
        "results": {
            "100": {"summary": {**summary, "ratios": {}}},
            "1000": {"summary": {**summary, "ratios": {}}},
        },
        "timelines": {"1000": {"kokpit": [[0.0, 0], [0.5, 600], [1.0, 1000]], "kopf": []}},
    }
    paths = plot.runtime(result, tmp_path)
    assert [p.name for p in paths] == [
        "runtime-convergence.svg",
        "runtime-converge-s.svg",
        "runtime-peak-rss-mib.svg",
    ]
    svg = ET.parse(paths[0]).getroot()
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2
    assert lines[0].get("points", "").count(",") == 3


def test_slope_is_the_least_squares_cost_of_one_more() -> None:
    assert stats.slope([(1, 10.0), (2, 12.0), (4, 16.0)]) == 2.0
    assert stats.slope([(1, 10.0), (2, 13.0), (4, 16.0)]) == pytest.approx(9 / (42 / 9), abs=1e-4)
    assert stats.slope([(5, 1.0), (5, 2.0)]) is None


def test_every_benchmark_draws_its_cost_curves(tmp_path: Path) -> None:
    steps = [
        {"clusters": n, "added": 100, "added_ready_seconds": n / 10, "operator_rss_mib": 60 + n}
        for n in (100, 200, 300)
    ]
    machine_steps = [
        {
            "machines": n,
            "added": 1000,
            "added_ready_seconds": n / 8,
            "operator_rss_mib": 70 + n / 100,
            "api_requests_per_added_machine": 11.0,
            "operator_cpu_seconds_per_added_machine": 0.02,
            "gate_latency_under_load": {"samples": 20, "p50_seconds": 0.1, "p99_seconds": 2.0},
        }
        for n in (1000, 2000, 5000)
    ]
    drawn = {
        "cluster": plot.cluster({"kubernetes_runtime_at_scale": {"steps": steps}}, tmp_path),
        "machine": plot.machines({"steps": machine_steps}, tmp_path),
        "clustercache": plot.clustercache(
            {"samples": [{"mode": "full", "clusters": k, "live_mib": 8.0 * k} for k in (1, 2, 4)]},
            tmp_path,
        ),
        "local": plot.local(
            {"idle_with_nodes": [{"nodes": n, "rss_mib": {"etcd": n / 10}} for n in (5, 10, 20)]},
            tmp_path,
        ),
    }
    # The real-node chart of the cluster benchmark has no data here, so it is not drawn.
    assert [p.name for p in drawn["cluster"]] == [
        "cluster-operator-rss-mib.svg",
        "cluster-ready-seconds-per-cluster.svg",
    ]
    assert len(drawn["machine"]) == 4
    for paths in drawn.values():
        for path in paths:
            svg = ET.parse(path).getroot()
            points = [
                line.get("points", "").split()
                for line in svg.findall("{http://www.w3.org/2000/svg}polyline")
            ]
            assert points
            assert all(len(p) == 3 for p in points), path.name
