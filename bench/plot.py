"""Plots drawn from a benchmark's JSON, as SVG files with no plotting library.

A reader should see a curve, not only a number: how each target converges over time, and how
cost grows with the object count. The charts are plain line charts, so a small SVG writer is
enough and ``make bench`` needs nothing beyond the project's own dependencies.

Each benchmark draws its own plots when it writes its result; ``python -m bench.plot
[--quick]`` draws them all again from the results on disk.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from bench.machine import QUICK, RESULTS
from kokpit.controllers.rollout import RolloutOptions

PLOTS = RESULTS / "plots"
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 160, 40, 50

Series = Mapping[str, Sequence[tuple[float, float]]]


def line_chart(title: str, x_label: str, y_label: str, series: Series) -> str:
    """An SVG line chart of named series of ``(x, y)`` points, with a legend on the right."""
    points = [p for line in series.values() for p in line]
    x_max = max((x for x, _ in points), default=1.0) or 1.0
    y_max = max((y for _, y in points), default=1.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + plot_w * x / x_max

    def sy(y: float) -> float:
        return TOP + plot_h * (1 - y / y_max)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="black"/>',
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 10}" text-anchor="middle">'
        f"{escape(x_label)}</text>",
        f'<text x="15" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 15 {TOP + plot_h / 2})">{escape(y_label)}</text>',
    ]
    for i in range(5):
        fx, fy = x_max * i / 4, y_max * i / 4
        out.append(
            f'<text x="{sx(fx)}" y="{TOP + plot_h + 16}" text-anchor="middle">{_num(fx)}</text>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{sy(fy) + 4}" text-anchor="end">{_num(fy)}</text>')
    for i, (name, line) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in line if len(line) <= 12 else ():
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>')
        ly = TOP + 16 * i
        out.append(
            f'<line x1="{WIDTH - RIGHT + 15}" y1="{ly}" x2="{WIDTH - RIGHT + 35}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        out.append(f'<text x="{WIDTH - RIGHT + 40}" y="{ly + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def write(name: str, svg: str, directory: Path = PLOTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.svg"
    path.write_text(svg)
    return path


def runtime(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """The runtime benchmark's plots: convergence over time at the largest size, and the
    median convergence time and peak memory as the object count grows."""
    paths: list[Path] = []
    sizes = sorted(int(s) for s in result["results"])
    if not sizes:
        return paths
    largest = str(sizes[-1])
    timelines = result["timelines"][largest]
    curves = {t: [(x, float(y)) for x, y in line] for t, line in timelines.items()}
    paths.append(
        write(
            "runtime-convergence",
            line_chart(
                f"{largest} Widgets converging (first run of each target)",
                "seconds since the target started",
                "Widgets converged",
                curves,
            ),
            directory,
        )
    )
    for figure, label in (("converge_s", "seconds to converge"), ("peak_rss_mib", "peak RSS, MiB")):
        growth: dict[str, list[tuple[float, float]]] = {}
        for size in sizes:
            for target, spread in result["results"][str(size)]["summary"].items():
                if target != "ratios" and figure in spread:
                    growth.setdefault(target, []).append((size, spread[figure]["median"]))
        paths.append(
            write(
                f"runtime-{figure.replace('_', '-')}",
                line_chart(f"{label} (median of runs) by object count", "Widgets", label, growth),
                directory,
            )
        )
    return paths


def _steps(
    steps: Sequence[Mapping[str, Any]], x: str, y: str, scale: float = 1.0
) -> list[tuple[float, float]]:
    """``(step[x], step[y] * scale)`` of every step that has both."""
    return [(float(p[x]), float(p[y]) * scale) for p in steps if x in p and p.get(y) is not None]


def _cost(
    name: str, title: str, x_label: str, y_label: str, series: Series, directory: Path
) -> list[Path]:
    """One cost curve, if any series has a point."""
    kept = {k: v for k, v in series.items() if v}
    return [write(name, line_chart(title, x_label, y_label, kept), directory)] if kept else []


def cluster(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """The Cluster-Operator's cost as Clusters are added: on KWOK (no component runs) and with
    real control planes on the real node."""
    scale = (result.get("kubernetes_runtime_at_scale") or {}).get("steps") or []
    real = (result.get("kubernetes_runtime_on_real_node") or {}).get("steps") or []
    paths = _cost(
        "cluster-operator-rss-mib",
        "Cluster-Operator memory by Cluster count",
        "Clusters",
        "operator RSS, MiB",
        {
            "KWOK (no component runs)": _steps(scale, "clusters", "operator_rss_mib"),
            "real control planes": _steps(real, "clusters", "operator_rss_mib"),
        },
        directory,
    )
    paths += _cost(
        "cluster-ready-seconds-per-cluster",
        "Seconds until the added Clusters are Ready, per added Cluster",
        "Clusters",
        "seconds per added Cluster",
        {
            "KWOK (no component runs)": [
                (float(p["clusters"]), p["added_ready_seconds"] / p["added"])
                for p in scale
                if p.get("added")
            ]
        },
        directory,
    )
    paths += _cost(
        "cluster-real-control-planes-rss-mib",
        "Real control planes on the real node: memory",
        "Clusters",
        "MiB",
        {
            "all control planes": _steps(real, "clusters", "control_planes_rss_mib_total"),
            "operator": _steps(real, "clusters", "operator_rss_mib"),
        },
        directory,
    )
    return paths


def machines(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """The Machine-Operator's cost as Machines join, and the gate latency under that load."""
    steps = result.get("steps") or []
    paths = _cost(
        "machine-operator-rss-mib",
        "Machine-Operator memory by Machine count",
        "Machines",
        "operator RSS, MiB",
        {"operator": _steps(steps, "machines", "operator_rss_mib")},
        directory,
    )
    paths += _cost(
        "machine-cost-per-added-machine",
        "Per added Machine, by Machine count",
        "Machines",
        "per added Machine",
        {
            "API requests": _steps(steps, "machines", "api_requests_per_added_machine"),
            "operator CPU, ms": _steps(
                steps, "machines", "operator_cpu_seconds_per_added_machine", 1000
            ),
        },
        directory,
    )
    paths += _cost(
        "machine-added-ready-seconds",
        "Seconds until the added Machines are Ready",
        "Machines",
        "seconds",
        {"added Machines": _steps(steps, "machines", "added_ready_seconds")},
        directory,
    )
    loaded = [p for p in steps if p.get("gate_latency_under_load", {}).get("samples")]
    paths += _cost(
        "machine-gate-latency-under-load",
        "Condition ConfigMap → taint, while Machines join",
        "Machines",
        "seconds",
        {
            "p50": [
                (float(p["machines"]), p["gate_latency_under_load"]["p50_seconds"]) for p in loaded
            ],
            "p99": [
                (float(p["machines"]), p["gate_latency_under_load"]["p99_seconds"]) for p in loaded
            ],
        },
        directory,
    )
    return paths


def clustercache(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """Live memory of the per-cluster cache by watched cluster count, per way of caching."""
    series: dict[str, list[tuple[float, float]]] = {}
    for sample in result.get("samples") or []:
        series.setdefault(sample["mode"], []).append((sample["clusters"], sample["live_mib"]))
    return _cost(
        "clustercache-live-mib",
        f"Cluster cache memory, {result.get('nodes_per_cluster')} Nodes per cluster",
        "business clusters watched",
        "live MiB (tracemalloc)",
        {mode: sorted(points) for mode, points in series.items()},
        directory,
    )


def local(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """The local meta-cluster's components' memory by KWOK node count."""
    steps = result.get("idle_with_nodes") or []
    if isinstance(steps, Mapping):  # a result from before the node counts grew: one step
        steps = [steps]
    series: dict[str, list[tuple[float, float]]] = {}
    for step in steps:
        for component, mib in step["rss_mib"].items():
            series.setdefault(component, []).append((step["nodes"], mib))
    return _cost(
        "local-idle-rss-mib",
        "Meta-cluster components, idle, by KWOK node count",
        "Nodes",
        "RSS, MiB",
        series,
        directory,
    )


def _ask_latency(result: Mapping[str, Any], directory: Path) -> list[Path]:
    """The guard's ask latency (median over runs) by concurrent callers, in one process."""
    series: dict[str, list[tuple[float, float]]] = {"p50": [], "p99": []}
    for level in (result.get("levels") or {}).values():
        if level["runs"][0]["processes"] != 1:
            continue
        callers = level["runs"][0]["callers"]
        series["p50"].append((callers, level["p50_ms"]["median"]))
        series["p99"].append((callers, level["p99_ms"]["median"]))
    return _cost(
        "risk-ask-latency-ms",
        "Guard: latency of an ask, one process",
        "concurrent callers",
        "ms",
        {k: sorted(v) for k, v in series.items()},
        directory,
    )


def rollout(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """A Rollout's time and cost by fleet size, at the Rollout-Operator's default concurrency
    (the first such rollout at each size)."""
    default = RolloutOptions().max_concurrent_changes
    firsts: dict[int, Mapping[str, Any]] = {}
    for one in result.get("rollouts") or []:
        if one["max_concurrent_changes"] == default:
            firsts.setdefault(int(one["machines"]), one)
    runs = [firsts[n] for n in sorted(firsts)]

    def per_machine(one: Mapping[str, Any], key: str) -> float:
        return float(one["requests_per_machine"][key]["total"])

    paths = _cost(
        "rollout-seconds",
        f"A Rollout of every Machine, {result.get('batches', '?')} batches",
        "Machines",
        "seconds",
        {"total": [(r["machines"], r["total_seconds"]) for r in runs]},
        directory,
    )
    paths += _cost(
        "rollout-cost-per-machine",
        "What each Machine moved costs",
        "Machines",
        "requests, CPU ms",
        {
            "Rollout-Operator requests": [
                (r["machines"], per_machine(r, "rollout_operator")) for r in runs
            ],
            "Machine-Operator requests": [
                (r["machines"], per_machine(r, "machine_operator")) for r in runs
            ],
            "Rollout-Operator CPU ms": [
                (r["machines"], 1000 * r["rollout_operator"]["cpu_seconds"] / r["machines"])
                for r in runs
            ],
        },
        directory,
    )
    return paths


def risk(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """The guard's ask latency and, from its ``rollout`` section, the rollout's curves."""
    return _ask_latency(result, directory) + rollout(result.get("rollout") or {}, directory)


def healing(result: Mapping[str, Any], directory: Path = PLOTS) -> list[Path]:
    """The self-healing loop by node count: its latencies, and what the operator costs."""
    steps = result.get("steps") or []

    def point(path: Sequence[str], scale: float = 1.0) -> list[tuple[float, float]]:
        points = []
        for step in steps:
            value: Any = step
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            if isinstance(value, int | float):
                points.append((float(step["nodes"]), float(value) * scale))
        return points

    paths = _cost(
        "healing-latency-seconds",
        "Fault → NodeFault Active, → cordon; storm → stop",
        "Nodes",
        "seconds",
        {
            "detection p50": point(("healing", "detection_seconds", "p50")),
            "detection p99": point(("healing", "detection_seconds", "p99")),
            "cordon p50": point(("healing", "cordon_seconds", "p50")),
            "cordon p99": point(("healing", "cordon_seconds", "p99")),
            "storm stop": point(("storm", "stop_seconds")),
        },
        directory,
    )
    paths += _cost(
        "healing-operator-cost",
        "Remediation operator by node count",
        "Nodes",
        "MiB, mCPU, requests",
        {
            "RSS, MiB": point(("idle", "rss_mib_idle")),
            "idle mCPU": point(("idle", "idle_mcpu")),
            "busy mCPU": point(("healing", "busy_mcpu")),
            "API requests / remediation": point(("healing", "api_requests_per_remediation")),
        },
        directory,
    )
    paths += _cost(
        "healing-remediations-per-minute",
        "Remediations completed per minute (1 % of nodes failing)",
        "Nodes",
        "per minute",
        {"completed": point(("healing", "remediations_per_minute"))},
        directory,
    )
    return paths


#: Result file → its plots.
PLOTTERS: dict[str, Callable[[Mapping[str, Any], Path], list[Path]]] = {
    "runtime": runtime,
    "cluster": cluster,
    "machine": machines,
    "clustercache": clustercache,
    "local": local,
    "risk": risk,
    "healing": healing,
}


def main() -> None:
    parser = argparse.ArgumentParser(description="draw every benchmark's plots from its result")
    parser.add_argument("--quick", action="store_true", help="from bench/results/quick")
    args = parser.parse_args()
    results = QUICK if args.quick else RESULTS
    for name, plotter in PLOTTERS.items():
        path = results / f"{name}.json"
        if path.exists():
            for drawn in plotter(json.loads(path.read_text()), results / "plots"):
                print(drawn)


if __name__ == "__main__":
    main()
