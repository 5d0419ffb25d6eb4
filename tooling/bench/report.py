"""The run's report: JSON (everything), Markdown (the summary a person reads), PNG (latency
percentiles against offered load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NON_CLAUDE = ("rules", "local", "escalated")
WORKER_PARTS = ("cheap", "io", "maintenance", "claude")  # the Procfile's worker roles


def write(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "png": out / "latency.png"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["markdown"].write_text(markdown(report))
    plot(report, paths["png"])
    return paths


def _phase(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in report["phases"] if p["name"] == name), None)


def _ms(p: dict[str, Any] | None, key: str = "p95") -> str:
    return "–" if not p or key not in p else f"{p[key]:.0f}"


def _latency_rows(phase: dict[str, Any]) -> list[str]:
    rows = [
        f"| API (POST) | {phase['api_ms'].get('n', 0)} | "
        + " | ".join(_ms(phase["api_ms"], k) for k in ("p50", "p95", "p99"))
        + " |"
    ]
    for path, p in phase["e2e_ms"].items():
        rows.append(
            f"| end to end: {path} | {p.get('n', 0)} | " + " | ".join(_ms(p, k) for k in ("p50", "p95", "p99")) + " |"
        )
    return rows


def _phase_row(p: dict[str, Any]) -> str:
    if p["kind"] == "load":
        e, offered = p["e2e_ms"].get("all", {}), p["offered"]
        what = f"{offered['rate']}/s" if offered["mode"] == "open" else f"{offered['in_flight']} in flight"
        cpu = (p.get("cpu_ms_per_ticket") or {}).get("system_total", "–")
        api = _ms(p["api_ms"])
        return f"| {p['name']} | {what} | {p['terminal_per_s']} | {api} | {_ms(e, 'p50')} | {_ms(e)} | {_ms(e, 'p99')} | {cpu} | {p['load_avg_end'][0]} |"
    c, cpu = p["chain_ms"], (p.get("cpu_ms_per_chain") or {}).get("system_total", "–")
    name = f"{p['name']} ({p['hops']} no-op hops)"
    return f"| {name} | {p['in_flight']} in flight | {p['chains_per_s']} | | {_ms(c, 'p50')} | {_ms(c)} | {_ms(c, 'p99')} | {cpu} | {p['load_avg_end'][0]} |"


def _ok(headline: dict[str, Any], target: str) -> str:
    return "✅" if headline["targets"].get(target) else "❌"


def markdown(report: dict[str, Any]) -> str:
    h, meta = report["headline"], report["meta"]
    lines = [
        f"# Benchmark {meta['started']}",
        "",
        f"`{meta['command']}` on {meta['cpus']} cores, commit `{meta['commit']}`; load average at start "
        f"{meta['load_avg_start']}, CPU used by other processes during the run: {meta['not_ours_percent']} % of a core.",
        "",
        "## Headline",
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| yardstick: bare Celery no-op chains ({h['baseline_hops']} hops, solo worker) | "
        f"{h['baseline_chains_per_s']} chains/s | |",
        f"| sustained, non-Claude mix | {h['sustained_per_s']} tickets/s "
        f"({h['celery_tasks_per_ticket']} Celery tasks a ticket) | |",
        f"| sustained ÷ yardstick | {h['ratio']} | |",
        f"| offered at half load | {h['half_rate']} tickets/s | |",
        f"| p95 end to end at half load (non-Claude) | {h['half_p95_ms']} ms | ≤ 40 {_ok(h, 'p95')} |",
        f"| p95 of the first hop (api→parse) at half load | {h['half_first_hop_p95_ms']} ms | ≤ 25 {_ok(h, 'first_hop')} |",
        f"| at 0.9×: done / offered | {h['high_done_per_offered']} | ≥ 0.98 {_ok(h, 'high_done')} |",
        f"| at 0.9×: p95 end to end | {h['high_p95_ms']} ms | ≤ 150 {_ok(h, 'high_p95')} |",
        f"| round trips to Postgres per ticket | {h['round_trips_per_ticket']} | |",
        f"| largest worker RSS (peak) | {h['worker_rss_peak_mb']} MB | ≤ 320 {_ok(h, 'rss')} |",
        f"| every accepted ticket terminal | {h['all_terminal']} | yes |",
        "",
    ]
    for name in ("saturation", "open 0.50x", "claude"):
        phase = _phase(report, name)
        if phase:
            lines += [f"## Latency, {name} ({phase['terminal_per_s']} tickets/s), ms", "",
                      "| what | n | p50 | p95 | p99 |", "|---|---|---|---|---|", *_latency_rows(phase), ""]  # fmt: skip
    half = _phase(report, "open 0.50x") or _phase(report, "saturation")
    if half:
        lines += [
            "## Time per stage and per hop at half load, ms (p50 / p95)",
            "",
            "| stage | p50 | p95 |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {_ms(v, 'p50')} | {_ms(v)} |" for k, v in half["stage_ms"].items()]
        lines += ["", "| hop (publish → queue → Celery → load + claim) | p50 | p95 |", "|---|---|---|"]
        lines += [f"| {k} | {_ms(v, 'p50')} | {_ms(v)} |" for k, v in half["hop_ms"].items()]
        lines += [f"| … api→{k} | {_ms(v, 'p50')} | {_ms(v)} |" for k, v in half.get("first_hop_ms", {}).items()]
        lines += ["", f"End to end minus the stages' own time (Celery, queues, Postgres hops): p50 {_ms(half['overhead_ms'], 'p50')} ms, "
                  f"p95 {_ms(half['overhead_ms'])} ms.", ""]  # fmt: skip
        rt = half.get("round_trips_per_ticket") or {}
        lines += ["## Postgres round trips per ticket (statements + BEGIN/COMMIT)", "",
                  "| task | calls | statements | transactions | round trips |", "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v['calls']} | {v['statements_per_call']} | {v['transactions_per_call']} | {v['round_trips_per_call']} |"
                  for k, v in rt.get("per_task", {}).items()]  # fmt: skip
        lines += [
            f"| **per ticket** | | {rt.get('statements')} | {rt.get('transactions')} | {rt.get('round_trips')} |",
            "",
        ]
    lines += ["## Every phase", "", "| phase | offered | done /s | API p95 | e2e p50 | e2e p95 | e2e p99 | CPU ms a ticket | load avg |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [_phase_row(p) for p in report["phases"]]
    lines += [
        "",
        "## Processes over the whole run",
        "",
        "| process | CPU s | % of a core | RSS start MB | RSS end MB | RSS peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in report["processes"].items():
        if "rss_start_mb" in p:
            lines.append(
                f"| {name} | {p['cpu_seconds']} | {p['cpu_percent_of_core']} | {p['rss_start_mb']} | {p['rss_end_mb']} | {p['rss_peak_mb']} |"
            )
    soak = report.get("soak")
    if soak:
        lines += ["", f"## Soak: {soak['seconds']} s at half load (first tenth left out)", "",
                  "| process | RSS start MB | RSS end MB | RSS peak MB | trend MB/min |", "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v['rss_start_mb']} | {v['rss_end_mb']} | {v['rss_peak_mb']} | {soak['rss_mb_per_min'].get(k)} |"
                  for k, v in soak["rss"].items()]  # fmt: skip
    scale = report.get("scale")
    if scale:
        small, large = scale["small"], scale["large"]
        lines += ["", "## Existing tickets: the same measurements with more of them", "",
                  f"| | {small['tickets']:,} tickets | {large['tickets']:,} tickets |", "|---|---|---|"]  # fmt: skip
        for label, key in (("sustained tickets/s", "sustained_per_s"), ("no-op baseline chains/s", "baseline_chains_per_s"),
                           ("ratio", "ratio"), ("offered at half load /s", "half_rate"), ("round trips a ticket", "round_trips_per_ticket")):  # fmt: skip
            lines.append(f"| {label} | {small.get(key)} | {large.get(key)} |")
        for k in ("p50", "p95", "p99"):
            lines.append(
                f"| end to end {k} at half load, ms | {_ms(small['half_e2e_ms'], k)} | {_ms(large['half_e2e_ms'], k)} |"
            )
        lines.append(f"| API p95 at half load, ms | {_ms(small['half_api_ms'])} | {_ms(large['half_api_ms'])} |")
        lines.append(f"| seeding | | {large['seed'].get('added'):,} tickets in {large['seed'].get('seconds')} s |")
    if report.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    sweep = [
        p for p in report["phases"] if p["kind"] == "load" and p["name"].startswith("open") and "@" not in p["name"]
    ]
    sweep.sort(key=lambda p: p["offered"]["rate"])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    x = [p["offered"]["rate"] for p in sweep]
    for key, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^")):
        ax.plot(x, [p["e2e_ms"].get("all", {}).get(key, float("nan")) for p in sweep], style, label=f"end to end {key}")
    ax.plot(x, [p["api_ms"].get("p95", float("nan")) for p in sweep], ":x", label="API p95")
    h = report["headline"]
    ax.axhline(250, color="green", lw=0.8, ls="--", label="250 ms target")
    ax.axhline(500, color="orange", lw=0.8, ls="--", label="500 ms")
    if h.get("sustained_per_s"):
        ax.axvline(h["sustained_per_s"], color="grey", lw=0.8, label=f"sustained {h['sustained_per_s']}/s")
    if h.get("baseline_chains_per_s"):
        ax.axvline(
            h["baseline_chains_per_s"],
            color="black",
            lw=0.8,
            ls=":",
            label=f"no-op baseline {h['baseline_chains_per_s']}/s",
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (tickets/s, Poisson)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"Latency against offered load — {report['meta']['started']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
