"""Before and after from one command: `python -m tooling.bench --ref REV [options]`.

The reference is checked out in a git worktree (`var/bench/trees/<sha>`, kept for the next run)
and run with this checkout's interpreter and virtualenv; the two heads then run in turns — ref,
head, head, ref (`--rounds` pairs) — each with the same options, through its own benchmark (its
`tooling.bench`, or the older top-level `bench`). A machine that gets busier or quieter during the
run moves both sides. The side-by-side table is printed and written to `compare.md` and
`compare.json` beside the runs' own reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tooling.bench.system import ROOT

# Parts of the system that are not the product's processes (their RSS is not "a worker's").
NOT_PRODUCT = ("postgres", "redis", "bench", "simulator", "yardstick", "machine", "not_ours")


def worktree(rev: str) -> tuple[Path, str]:
    """A checkout of `rev` under var/bench/trees (made once, reused)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    tree = ROOT / "var" / "bench" / "trees" / sha[:12]
    if not (tree / ".git").exists():
        tree.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), sha], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
    venv = tree / ".venv"
    if not venv.exists() and (ROOT / ".venv").exists():
        venv.symlink_to(ROOT / ".venv")  # the reference runs with this checkout's packages
    return tree, sha[:12]


def bench_module(tree: Path) -> str:
    return "tooling.bench" if (tree / "tooling" / "bench" / "__main__.py").exists() else "bench"


def run_one(tree: Path, args: list[str], out: Path, log: Path) -> dict[str, Any]:
    """One whole benchmark run of the tree at `tree`; its report.json."""
    cmd = [sys.executable, "-m", bench_module(tree), *args, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with open(log, "wb") as fh:
        subprocess.run(cmd, cwd=tree, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    path = out / "report.json"
    if not path.exists():
        raise RuntimeError(f"{' '.join(cmd)} wrote no report: see {log}")
    return json.loads(path.read_text())


def _phase(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next((p for p in report.get("phases", []) if p["name"] == name), {})


def figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline of one run, read the same way from either head's report."""
    sat, half, high = _phase(report, "saturation"), _phase(report, "open 0.50x"), _phase(report, "open 0.90x")

    def e2e(phase: dict[str, Any], key: str) -> float | None:
        return (phase.get("e2e_ms") or {}).get("all", {}).get(key)

    def first_hop(phase: dict[str, Any]) -> float | None:
        return (phase.get("hop_ms") or {}).get("api→parse", {}).get("p95")

    offered = (high.get("offered") or {}).get("rate")
    cpu = half.get("cpu_ms_per_ticket") or {}
    processes = report.get("processes", {})
    product = {k: v for k, v in processes.items() if k not in NOT_PRODUCT and "rss_peak_mb" in v}
    return {
        "commit": report.get("meta", {}).get("commit"),
        "sustained_per_s": sat.get("terminal_per_s"),
        "half_rate": (half.get("offered") or {}).get("rate"),
        "half_p50": e2e(half, "p50"),
        "half_p95": e2e(half, "p95"),
        "half_p99": e2e(half, "p99"),
        "half_first_hop_p95": first_hop(half),
        "high_rate": offered,
        "high_done_offered": round(high["terminal_per_s"] / offered, 3) if offered else None,
        "high_p50": e2e(high, "p50"),
        "high_p95": e2e(high, "p95"),
        "high_p99": e2e(high, "p99"),
        "high_first_hop_p95": first_hop(high),
        "cpu_ms_per_ticket": cpu,
        "round_trips_per_ticket": (half.get("round_trips_per_ticket") or {}).get("round_trips"),
        "rss_peak_mb": max((v["rss_peak_mb"] for v in product.values()), default=None),
        "rss_peak_process": max(product, key=lambda k: product[k]["rss_peak_mb"]) if product else None,
        "not_ours_percent": report.get("meta", {}).get("not_ours_percent"),
        "all_terminal": report.get("headline", {}).get("all_terminal"),
    }


ROWS = (
    ("sustained tickets/s", "sustained_per_s"),
    ("0.5×: offered /s", "half_rate"),
    ("0.5×: p50 end to end, ms", "half_p50"),
    ("0.5×: p95 end to end, ms", "half_p95"),
    ("0.5×: p99 end to end, ms", "half_p99"),
    ("0.5×: p95 of the first hop (api→parse), ms", "half_first_hop_p95"),
    ("0.9×: offered /s", "high_rate"),
    ("0.9×: done / offered", "high_done_offered"),
    ("0.9×: p50 end to end, ms", "high_p50"),
    ("0.9×: p95 end to end, ms", "high_p95"),
    ("0.9×: p99 end to end, ms", "high_p99"),
    ("0.9×: p95 of the first hop, ms", "high_first_hop_p95"),
    ("Postgres round trips a ticket (0.5×)", "round_trips_per_ticket"),
    ("largest RSS of a product process, MB", "rss_peak_mb"),
    ("CPU of other processes during the run, % of a core", "not_ours_percent"),
    ("every accepted ticket terminal", "all_terminal"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: a column per run, in the order they ran."""
    head = "| figure | " + " | ".join(label for label, _ in runs) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    lines.append("| commit | " + " | ".join(f"`{f['commit']}`" for _, f in runs) + " |")
    for title, key in ROWS:
        lines.append(f"| {title} | " + " | ".join(_cell(f[key]) for _, f in runs) + " |")
    rss = " | ".join(str(f["rss_peak_process"]) for _, f in runs)
    lines.append(f"| … the process with the largest RSS | {rss} |")
    parts = sorted({p for _, f in runs for p in f["cpu_ms_per_ticket"]} - {"bench", "system_total"})
    for part in [*parts, "system_total"]:
        cells = " | ".join(_cell(f["cpu_ms_per_ticket"].get(part)) for _, f in runs)
        lines.append(f"| CPU ms a ticket at 0.5×: {part} | {cells} |")
    return "\n".join(lines) + "\n"


# The latency issue's targets on 2 cores (docs/performance.md): (figure, test, what it says).
TARGETS = (
    ("half_p95", lambda v, _: v is not None and v <= 40, "p95 end to end at 0.5× ≤ 40 ms"),
    ("half_first_hop_p95", lambda v, _: v is not None and v <= 25, "the first hop's p95 at 0.5× ≤ 25 ms"),
    ("high_done_offered", lambda v, _: v is not None and v >= 0.98, "done / offered at 0.9× ≥ 0.98"),
    ("high_p95", lambda v, _: v is not None and v <= 150, "p95 end to end at 0.9× ≤ 150 ms"),
    ("sustained_per_s", lambda v, ref: v is not None and v >= ref, "sustained ≥ the reference's (its mean)"),
    ("rss_peak_mb", lambda v, _: v is not None and v <= 320, "largest RSS ≤ 320 MB"),
)


def verdicts(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Each head run against the targets (the reference's sustained rate: the mean of its runs)."""
    refs = [f["sustained_per_s"] or 0 for label, f in runs if label.startswith("ref")]
    ref_sustained = sum(refs) / len(refs) if refs else 0.0
    heads = [(label, f) for label, f in runs if label.startswith("head")]
    lines = ["| target | " + " | ".join(label for label, _ in heads) + " |", "|---|" + "---|" * len(heads)]
    for key, test, text in TARGETS:
        cells = " | ".join(("✅ " if test(f[key], ref_sustained) else "❌ ") + _cell(f[key]) for _, f in heads)
        lines.append(f"| {text} | {cells} |")
    return "\n".join(lines) + "\n"


def main(ref: str, args: list[str], out: Path, rounds: int) -> int:
    """Run ref and head in turns (ref, head, head, ref per round pair); print and write the table."""
    tree, sha = worktree(ref)
    out.mkdir(parents=True, exist_ok=True)
    order = [("ref", tree), ("head", ROOT), ("head", ROOT), ("ref", tree)] * ((rounds + 1) // 2)
    order = order[:rounds]
    runs: list[tuple[str, dict[str, Any]]] = []
    count = {"ref": 0, "head": 0}
    for side, where in order:
        count[side] += 1
        label = f"{side}-{count[side]}"
        print(f"[compare {time.strftime('%H:%M:%S')}] {label}: {where} ({bench_module(where)})", flush=True)
        report = run_one(where, args, out / label, out / f"{label}.log")
        runs.append((label, figures(report)))
        (out / "compare.json").write_text(json.dumps({"ref": sha, "args": args, "runs": dict(runs)}, indent=2))
    text = f"# Before and after: `{ref}` ({sha}) against this checkout\n\n`{' '.join(args)}`\n\n" + table(runs)
    text += "\n## This checkout against the targets\n\n" + verdicts(runs)
    (out / "compare.md").write_text(text)
    print(text)
    print(f"runs and reports: {out}")
    return 0
