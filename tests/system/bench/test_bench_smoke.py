"""The benchmark harness, briefly: the whole system under a few seconds of load, and a complete
report. No timing is asserted (this machine is shared); that every ticket ended is."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tooling.bench import plan, report
from tooling.bench.progress import Progress
from tooling.bench.runner import Config

HEADLINE = {
    "baseline_chains_per_s",
    "baseline_hops",
    "half_first_hop_p95_ms",
    "celery_tasks_per_ticket",
    "sustained_per_s",
    "ratio",
    "half_rate",
    "half_p95_ms",
    "half_e2e_ms",
    "round_trips_per_ticket",
    "worker_rss_peak_mb",
    "worker_rss",
    "all_terminal",
    "targets",
}
LOAD_PHASE = {"offered", "sent", "accepted", "terminal_per_s", "api_ms", "e2e_ms", "stage_ms", "hop_ms"}
LOAD_PHASE |= {"overhead_ms", "processes", "round_trips", "round_trips_per_ticket", "cpu_ms_per_ticket"}


@pytest.fixture
def out() -> Iterator[Path]:
    """A directory of the test's own under /tmp: the embedded Postgres runs as another user, who must
    reach it through every parent (pytest's base temp is private to root, and other sessions change it)."""
    path = Path(tempfile.mkdtemp(prefix="bench-smoke-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_short_run_reports_every_figure_and_every_ticket_ends(out: Path) -> None:
    cfg = Config(
        out=out / "bench",
        seconds=3.0,
        concurrency=6,
        fractions=(0.5,),
        existing=300,
        tiers=("rules",),
        warmup=3.0,
        drain=60.0,
    )
    result = plan.execute(cfg, Progress())
    paths = report.write(result, cfg.out)

    assert HEADLINE <= set(result["headline"])
    names = [p["name"] for p in result["phases"]]
    assert names == ["warm-up", "noop idle", "noop", "saturation", "noop again", "open 0.50x"]
    for phase in result["phases"]:
        if phase["kind"] == "load":
            assert LOAD_PHASE <= set(phase), phase["name"]
            assert phase["accepted"] > 0 and phase["not_terminal"] == 0, phase["name"]
        else:
            assert phase["chains"] > 0 and "cpu_ms_per_chain" in phase
    half = next(p for p in result["phases"] if p["name"] == "open 0.50x")
    assert {"p50", "p95", "p99"} <= set(half["e2e_ms"]["all"]) and half["round_trips_per_ticket"]["round_trips"] > 0
    assert {"cheap", "io", "web", "postgres", "redis", "yardstick"} <= set(result["processes"])
    # The yardstick is a worker of its own, not the product's: its CPU is no part of a ticket's.
    assert "yardstick" not in result["headline"]["worker_rss"]
    assert result["headline"]["all_terminal"] is True
    assert set(result["final_statuses"]) <= {"resolved", "awaiting_review", "dead_lettered"}
    assert json.loads(paths["json"].read_text())["headline"] == json.loads(json.dumps(result["headline"]))
    assert "## Headline" in paths["markdown"].read_text()
    assert paths["png"].stat().st_size > 1000
