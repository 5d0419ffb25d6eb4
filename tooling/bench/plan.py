"""The sequence of one run (see `bench.runner` for the phases) and the headline it produces."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from statistics import mean
from typing import Any

from tooling.bench.corpus import blends, rule_misses
from tooling.bench.progress import Progress
from tooling.bench.report import NON_CLAUDE, WORKER_PARTS
from tooling.bench.runner import Config, Run
from tooling.bench.sampler import rss_trend, summarise
from tooling.bench.system import ROOT


def execute(cfg: Config, progress: Progress) -> dict[str, Any]:
    """Run every phase the config asks for; always stop the system; return the report."""
    run = Run(cfg, progress)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {"seed": {}, "scale": {}, "soak": {}}
    try:
        run.start()
        run.local_model()
        run.load("warm-up", seconds=cfg.warmup, closed=8)
        report["seed"]["main"] = run.seed_to(cfg.existing)
        run.noop("noop idle", seconds=min(5.0, cfg.seconds), concurrency=1)
        sustained, base = _saturation(run, cfg, "")
        for fraction in cfg.fractions:
            run.load(f"open {fraction:.2f}x", seconds=cfg.seconds, rate=fraction * sustained)
        if cfg.soak:
            t0 = time.time()
            run.load("soak 0.50x", seconds=cfg.soak, rate=0.5 * sustained)
            report["soak"] = _soak(run, t0)
        if cfg.scale_to:
            report["scale"] = _scale(run, cfg, sustained, base)
        if cfg.claude:
            hard = blends(rule_misses(run.texts), 2000)
            run.extra["claude_simulator"] = run.system.claude_on(rpm=cfg.claude_rpm, latency=cfg.claude_latency)
            run.load("claude", seconds=max(cfg.seconds, 30.0), rate=cfg.claude_rate, texts=hard)
        report["final_statuses"] = run.drain_check()
    finally:
        run.stop()
    report["phases"] = run.phases
    report["processes"] = summarise(run.sampler.samples) if hasattr(run, "sampler") else {}
    report["meta"] = _meta(cfg, started, load_start, report["processes"])
    report["extra"] = run.extra
    report["config"] = {k: (str(v) if k == "out" else v) for k, v in asdict(cfg).items()}
    report["notes"] = cfg.notes
    report["headline"] = headline(report)
    return report


def _saturation(run: Run, cfg: Config, suffix: str) -> tuple[float, float]:
    """noop, saturation, noop: the sustained rate and the baseline bracketing it."""
    a = run.noop(f"noop{suffix}", seconds=cfg.seconds, concurrency=cfg.concurrency)
    sat = run.load(f"saturation{suffix}", seconds=cfg.seconds, closed=cfg.concurrency)
    b = run.noop(f"noop again{suffix}", seconds=cfg.seconds, concurrency=cfg.concurrency)
    return sat["terminal_per_s"], mean([a["chains_per_s"], b["chains_per_s"]])


def _scale(run: Run, cfg: Config, sustained: float, base: float) -> dict[str, Any]:
    """The same measurements with `scale_to` tickets in the database, at the same offered rate."""
    first = {"tickets": run.system.sql("SELECT count(*) FROM tickets_ticket")[0][0]}
    seeded = run.seed_to(cfg.scale_to)
    big_sustained, big_base = _saturation(run, cfg, f" @{cfg.scale_to:,}")
    half = run.load(f"open 0.50x @{cfg.scale_to:,}", seconds=cfg.seconds, rate=0.5 * sustained)
    small_half = next(p for p in run.phases if p["name"] == "open 0.50x")

    def side(sus: float, b: float, h: dict[str, Any]) -> dict[str, Any]:
        return {"sustained_per_s": sus, "baseline_chains_per_s": round(b, 2), "ratio": round(sus / b, 3) if b else None,
                "half_rate": h["offered"]["rate"], "half_e2e_ms": h["e2e_ms"].get("all"), "half_api_ms": h["api_ms"],
                "round_trips_per_ticket": (h.get("round_trips_per_ticket") or {}).get("round_trips")}  # fmt: skip

    return {
        "small": {**first, **side(sustained, base, small_half)},
        "large": {"tickets": seeded["tickets_ticket"], "seed": seeded, **side(big_sustained, big_base, half)},
    }


def _soak(run: Run, t0: float) -> dict[str, Any]:
    samples = run.sampler.between(t0, time.time())
    keep = samples[len(samples) // 10 :]  # past the first tenth: caches and pools have filled
    parts = summarise(keep)
    return {
        "seconds": round(samples[-1].at - samples[0].at, 1) if samples else 0,
        "rss_mb_per_min": rss_trend(keep),
        "rss": {k: {m: v[m] for m in ("rss_start_mb", "rss_end_mb", "rss_peak_mb")} for k, v in parts.items() if "rss_start_mb" in v},
    }  # fmt: skip


def _meta(cfg: Config, started: str, load_start: list[float], processes: dict[str, Any]) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench", "agents", "celeryconfig.py"],
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    return {
        "started": started,
        "command": " ".join(["python -m tooling.bench", *sys.argv[1:]]),
        "commit": commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else ""),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_start": load_start,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "not_ours_percent": processes.get("not_ours", {}).get("cpu_percent_of_core"),
    }


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, and whether each meets its target."""
    phases = {p["name"]: p for p in report["phases"]}
    noops = [phases[n]["chains_per_s"] for n in ("noop", "noop again") if n in phases]
    base = round(mean(noops), 2) if noops else 0.0
    sat = phases.get("saturation", {})
    sustained = sat.get("terminal_per_s", 0.0)
    half = phases.get("open 0.50x", {})
    e2e = half.get("e2e_ms", {})
    non_claude = [e2e[p]["p95"] for p in NON_CLAUDE if e2e.get(p, {}).get("n")]
    p95 = e2e.get("all", {}).get("p95") if "claude" not in e2e else (max(non_claude) if non_claude else None)
    workers = {k: v for k, v in report["processes"].items() if k in WORKER_PARTS}
    rss_peak = max((v["rss_peak_mb"] for v in workers.values()), default=0.0)
    statuses = report.get("final_statuses", {})
    all_terminal = bool(statuses) and all(s in ("resolved", "awaiting_review", "dead_lettered") for s in statuses)
    ratio = round(sustained / base, 3) if base else None
    first_hop = (half.get("hop_ms") or {}).get("api→parse", {}).get("p95")
    high = phases.get("open 0.90x", {})
    high_rate = (high.get("offered") or {}).get("rate")
    high_done = round(high["terminal_per_s"] / high_rate, 3) if high_rate else None
    high_p95 = (high.get("e2e_ms") or {}).get("all", {}).get("p95")
    return {
        "celery_tasks_per_ticket": (sat.get("round_trips_per_ticket") or {}).get("celery_tasks"),
        "baseline_chains_per_s": base,
        "baseline_hops": phases.get("noop", {}).get("hops"),
        "sustained_per_s": sustained,
        "ratio": ratio,
        "half_rate": half.get("offered", {}).get("rate"),
        "half_p95_ms": p95,
        "half_e2e_ms": e2e,
        "half_first_hop_p95_ms": first_hop,
        "high_rate": high_rate,
        "high_done_per_offered": high_done,
        "high_p95_ms": high_p95,
        "round_trips_per_ticket": (half.get("round_trips_per_ticket") or {}).get("round_trips"),
        "worker_rss_peak_mb": rss_peak,
        "worker_rss": {k: {m: v[m] for m in ("rss_start_mb", "rss_end_mb", "rss_peak_mb")} for k, v in workers.items()},
        "all_terminal": all_terminal,
        # docs/performance.md, "Targets": what each figure must meet on 2 cores.
        "targets": {
            "p95": bool(p95 is not None and p95 <= 40),
            "first_hop": bool(first_hop is not None and first_hop <= 25),
            "high_done": bool(high_done is not None and high_done >= 0.98),
            "high_p95": bool(high_p95 is not None and high_p95 <= 150),
            "p95_headline_500": bool(p95 is not None and p95 < 500),
            "rss": bool(workers) and rss_peak <= 320,
        },
    }
