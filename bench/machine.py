"""What every benchmark result records about where it ran."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def describe() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


#: :func:`commit` as it was when the benchmark started (:func:`parse_args`).
_started: dict[str, Any] | None = None


def commit() -> dict[str, Any]:
    """The commit the benchmark ran on, and whether the code differed from it (a result from
    changed code cannot be reproduced from the commit alone): as it was when the benchmark
    started, if it has, since the code it runs is what it loaded then (a commit made during a
    run of an hour is not the code that ran)."""
    if _started is not None:
        return dict(_started)
    root = Path(__file__).parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    # Results written by earlier benchmarks of the same run are not code.
    changed = git("status", "--porcelain", "--", "kokpit", "bench", "fixtures", ":!bench/results")
    return {"commit": git("rev-parse", "HEAD") or "unknown", "code_changed": bool(changed)}


#: Where quick runs (``--quick``) write: not the results the docs quote.
QUICK = RESULTS / "quick"


def ints(text: str) -> list[int]:
    """A comma-separated list of sizes (``1000,3000,10000``), for argparse."""
    return [int(part) for part in text.split(",")]


def parse_args(parser: argparse.ArgumentParser, quick: Mapping[str, Any]) -> argparse.Namespace:
    """Parse a benchmark's arguments, with ``--quick``: the same code at the small sizes
    ``quick`` gives, so a run of minutes checks what the full run (the sizes the docs quote)
    measures. Quick results go to :data:`QUICK`, never over the quoted ones."""
    sizes = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in quick.items())
    parser.add_argument("--quick", action="store_true", help=f"minutes, not hours: {sizes}")
    args = parser.parse_args()
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    global _started
    _started = commit()
    return args


def run_record() -> dict[str, Any]:
    """When, where and from which commit a run is made (what :func:`write` puts on top)."""
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(),
        **commit(),
    }


def write(
    name: str, result: dict[str, Any], *, quick: bool = False, keep: Iterable[str] = ()
) -> Path:
    """Write the result ``name``; the sections named in ``keep`` that another benchmark wrote
    into the same file (:func:`write_section`) stay as they were."""
    directory = QUICK if quick else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    earlier: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    kept = {k: earlier[k] for k in keep if k in earlier}
    record = {"benchmark": name, **run_record(), **result, **kept}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def write_section(name: str, key: str, section: dict[str, Any], *, quick: bool = False) -> Path:
    """Write ``section`` under ``key`` of the result ``name`` with its own ``run``
    (:func:`run_record`), leaving everything else in the file as it was: a second benchmark
    whose figures belong with another's (the rollout's beside the guard's in ``risk.json``)
    must neither erase them nor claim their run."""
    directory = QUICK if quick else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"benchmark": name}
    record[key] = {"run": run_record(), **section}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def write_sections(
    name: str,
    sections: Mapping[str, dict[str, Any]],
    *,
    known: Iterable[str],
    common: Mapping[str, Any],
    quick: bool = False,
) -> Path:
    """Write ``sections`` into the result ``name``, keeping the sections an earlier run wrote
    that this one did not measure: a benchmark whose parts are run apart (one needs the
    machine's only real node, another hours of KWOK) must not erase one part by running the
    other. Each section carries its own ``run`` (:func:`run_record`); a section of a file
    written before sections had one gets the file's top-level record, which was its run's.
    ``known`` names every section the benchmark writes; the top level then describes the
    latest write, with ``common`` (what every section shares, such as ``meaning``)."""
    directory = QUICK if quick else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    earlier = {k: record[k] for k in ("when", "machine", "commit", "code_changed") if k in record}
    for key in known:
        kept = record.get(key)
        if isinstance(kept, dict) and "run" not in kept and earlier:
            record[key] = {"run": earlier, **kept}
    now = run_record()
    record.update({"benchmark": name, **now, **common})
    for key, section in sections.items():
        record[key] = {"run": now, **section}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
