"""The before/after table reads either head's report alike and judges the head runs by the targets."""

from __future__ import annotations

from typing import Any

from tooling.bench import compare


def _report(sustained: float, half_p95: float, first_hop: float, done: float, rss: float) -> dict[str, Any]:
    def load(name: str, rate: float, p95: float, hop: float) -> dict[str, Any]:
        return {"name": name, "offered": {"mode": "open", "rate": rate}, "terminal_per_s": rate * done,
                "e2e_ms": {"all": {"p50": p95 / 2, "p95": p95, "p99": p95 * 2}},
                "hop_ms": {"api→parse": {"p95": hop}}, "cpu_ms_per_ticket": {"web": 4.0, "system_total": 9.0},
                "round_trips_per_ticket": {"round_trips": 9.5}}  # fmt: skip

    return {
        "meta": {"commit": "abc", "not_ours_percent": 3.0},
        "headline": {"all_terminal": True},
        "phases": [
            {"name": "saturation", "terminal_per_s": sustained},
            load("open 0.50x", sustained / 2, half_p95, first_hop),
            load("open 0.90x", sustained * 0.9, half_p95 * 3, first_hop * 2),
        ],
        "processes": {"cheap": {"rss_peak_mb": rss}, "postgres": {"rss_peak_mb": 999.0}},
    }


def test_the_figures_come_from_the_phases_and_postgres_is_not_a_product_process() -> None:
    f = compare.figures(_report(100.0, 30.0, 20.0, 1.0, 250.0))

    assert f["sustained_per_s"] == 100.0 and f["half_rate"] == 50.0 and f["half_p95"] == 30.0
    assert f["half_first_hop_p95"] == 20.0 and f["high_done_offered"] == 1.0 and f["high_p95"] == 90.0
    assert f["rss_peak_mb"] == 250.0 and f["rss_peak_process"] == "cheap"
    assert f["cpu_ms_per_ticket"]["web"] == 4.0 and f["round_trips_per_ticket"] == 9.5


def test_a_head_slower_than_the_reference_or_over_a_target_is_marked() -> None:
    runs = [
        ("ref-1", compare.figures(_report(100.0, 30.0, 20.0, 1.0, 200.0))),
        ("head-1", compare.figures(_report(90.0, 300.0, 280.0, 0.76, 330.0))),
        ("head-2", compare.figures(_report(110.0, 30.0, 20.0, 1.0, 200.0))),
    ]

    text = compare.verdicts(runs)

    bad, good = ([line.split(" | ")[i] for line in text.splitlines()[2:]] for i in (1, 2))
    assert all(cell.startswith("❌") for cell in bad), text
    assert all(cell.startswith("✅") for cell in good), text
    assert "| ref-1 | head-1 | head-2 |" in compare.table(runs)
