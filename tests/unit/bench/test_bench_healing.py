"""The healing benchmark's choices that its figures rest on: which nodes fail (1 %, spread over
the failure domains, other nodes each round), which fail in the storm (beyond the policy's
minimum healthy share of one domain), latency percentiles by nearest rank, and its plots."""

from __future__ import annotations

import http.server
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import healing, plot, stats


def test_one_percent_fails_spread_evenly_over_the_zones() -> None:
    for size in (100, 1000, 3000, 10000):
        nodes = healing.failing(size, 0)
        assert len(nodes) == len(set(nodes)) == size // 100
        assert all(0 <= i < size for i in nodes)
        zones = Counter(healing.zone_of(i) for i in nodes)
        assert max(zones.values()) - min(zones.values()) <= 1
        if size >= 1000:
            assert len(zones) == healing.ZONES


def test_each_round_fails_other_nodes() -> None:
    rounds = [set(healing.failing(10000, r)) for r in range(3)]
    assert not rounds[0] & rounds[1]
    assert not rounds[1] & rounds[2]
    assert not rounds[0] & rounds[2]


def test_a_small_fleet_still_fails_one_node() -> None:
    assert healing.failing(40, 0) == [0]


def test_the_storm_takes_one_zone_below_its_minimum_healthy_share() -> None:
    for clusters in (1, 4):
        for size in (400, 1000, 10000):
            nodes, zone = healing.storm_nodes(size, clusters)
            assert {healing.zone_of(i) for i in nodes} == {f"z{healing.STORM_ZONE}"}
            # One storm-stop scope: the zone within one cluster.
            assert {healing.cluster_name(i, clusters) for i in nodes} == {"biz-0"}
            assert zone == size // healing.ZONES // clusters
            assert 100 * (zone - len(nodes)) / zone < healing.MIN_HEALTHY


def test_every_cluster_holds_every_zone_and_its_share_of_the_faults() -> None:
    nodes = range(10000)
    per_cluster = Counter(healing.cluster_name(i, 4) for i in nodes)
    assert per_cluster == {f"biz-{k}": 2500 for k in range(4)}
    for k in range(4):
        zones = Counter(
            healing.zone_of(i) for i in nodes if healing.cluster_name(i, 4) == f"biz-{k}"
        )
        assert zones == {f"z{z}": 250 for z in range(healing.ZONES)}
    faults = Counter(healing.cluster_name(i, 4) for i in healing.failing(10000, 0))
    assert set(faults) == {f"biz-{k}" for k in range(4)}
    assert max(faults.values()) - min(faults.values()) <= 4


def test_percentiles_are_nearest_rank_samples() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentiles(values) == {"p50": 50.0, "p99": 99.0, "max": 100.0, "n": 100}
    # Fewer samples than a hundred: the p99 is the slowest one, never below it.
    assert stats.percentiles([3.0, 1.0, 2.0])["p99"] == 3.0
    assert stats.percentiles([]) == {"n": 0}


def test_healing_plots_draw_latency_and_cost_by_node_count(tmp_path: Path) -> None:
    steps = [
        {
            "nodes": n,
            "idle": {"rss_mib_idle": 80 + n / 100, "idle_mcpu": n / 50},
            "healing": {
                "detection_seconds": {"p50": 0.2, "p99": 0.9, "n": n // 100},
                "cordon_seconds": {"p50": 2.2, "p99": 3.0, "n": n // 100},
                "busy_mcpu": 400.0,
                "api_requests_per_remediation": 14.0,
                "remediations_per_minute": 300.0,
            },
            "storm": {"stop_seconds": 3.5},
        }
        for n in (1000, 3000, 10000)
    ]
    paths = plot.healing({"steps": steps}, tmp_path)
    assert [p.name for p in paths] == [
        "healing-latency-seconds.svg",
        "healing-operator-cost.svg",
        "healing-remediations-per-minute.svg",
    ]
    latency = ET.parse(paths[0]).getroot()
    lines = latency.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 5
    assert all(len(line.get("points", "").split()) == 3 for line in lines)
    assert "healing" in plot.PLOTTERS


def test_rounds_pool_latencies_and_give_each_figure_its_spread() -> None:
    def round_(latencies: list[float], per_minute: float) -> dict[str, object]:
        samples = {k: latencies for k in ("detection", "cordon", "detection_to_cordon", "done")}
        return {"faults": len(latencies), "samples": samples, "remediations_per_minute": per_minute}

    summary = healing.summarize_rounds(
        [round_([0.1, 0.2], 100.0), round_([0.3, 5.0], 300.0), round_([0.4, 0.5], 200.0)]
    )
    assert summary["faults"] == 6
    # Percentiles over the faults of every round: the slowest fault of any round is the p99.
    assert summary["detection_seconds"]["p99"] == 5.0
    assert summary["remediations_per_minute"] == 200.0
    assert summary["remediations_per_minute_spread"] == {
        "median": 200.0,
        "min": 100.0,
        "max": 300.0,
        "n": 3,
    }


METRICS = b"""# HELP rest_client_requests_total Number of HTTP requests.
rest_client_requests_total{code="200",method="GET",host="127.0.0.1:1"} 5.0
rest_client_requests_total{code="201",method="POST",host="127.0.0.1:2"} 3.0
rest_client_rate_limiter_duration_seconds_sum{verb="GET",host="127.0.0.1:1"} 1.5
rest_client_request_duration_seconds_sum{host="127.0.0.1:1",verb="GET"} 0.8
rest_client_request_duration_seconds_count{host="127.0.0.1:1",verb="GET"} 8.0
rest_client_request_duration_seconds_sum{host="127.0.0.1:1",verb="WATCH"} 900.0
rest_client_request_duration_seconds_count{host="127.0.0.1:1",verb="WATCH"} 2.0
workqueue_queue_duration_seconds_sum{controller="remediation",name="remediation"} 3.0
workqueue_queue_duration_seconds_count{controller="remediation",name="remediation"} 2.0
"""


@pytest.fixture
def metrics_port() -> Iterator[int]:
    """An HTTP server that answers every GET with :data:`METRICS`, as an operator's
    ``/metrics`` does."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(METRICS)

        def log_message(self, *args: object) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_requests_are_counted_by_cluster_and_method_apart_from_times(metrics_port: int) -> None:
    made = healing.requests_made(metrics_port, {"127.0.0.1:1": "meta", "127.0.0.1:2": "business"})
    assert made["meta GET"] == 5
    assert made["business POST"] == 3
    assert healing.requests_total(made) == 8
    assert made[healing.WAITED] == 1500
    went = healing.where_time_went(Counter(), made)
    # Watches are open for minutes by design: not requests that took long.
    assert went["api_request_ms_mean"] == 100.0
    assert went["queue_wait_seconds_mean"] == {"remediation": 1.5}
