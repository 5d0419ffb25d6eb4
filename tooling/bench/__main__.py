"""`python -m tooling.bench [options]` (what `make bench` runs): see docs/performance.md."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tooling.bench.progress import Progress
from tooling.bench.runner import Config
from tooling.bench.system import ROOT


def parse(argv: list[str]) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m tooling.bench", description=__doc__)
    p.add_argument("--out", type=Path, default=None, help="results directory (default var/bench/<time>)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each measured phase")
    p.add_argument("--concurrency", type=int, default=24, help="in flight, closed-loop (tickets and no-op chains)")
    p.add_argument("--fractions", default="0.25,0.5,0.75,0.9", help="open-loop rates, as fractions of sustained")
    p.add_argument("--existing", type=int, default=10_000, help="tickets in the database before measuring")
    p.add_argument("--scale-to", type=int, default=0, help="then top up to this many and measure again (10⁶)")
    p.add_argument("--soak", type=float, default=0.0, help="seconds at half load, watching memory (600)")
    p.add_argument("--tiers", default="auto", help="rules[,local]; auto: rules,local when the local tier exists")
    p.add_argument("--claude", action="store_true", help="finish with the Claude tier on, against the simulator")
    p.add_argument("--claude-rate", type=float, default=4.0, help="tickets/s offered in the Claude phase")
    p.add_argument("--claude-rpm", type=int, default=600, help="the simulator's (and the limiter's) requests/min")
    p.add_argument("--claude-latency", default="lognormal:median=0.4,p99=2,min=0.1,max=4")
    p.add_argument("--customers", type=int, default=100_000, help="distinct customer_ref values")
    p.add_argument("--hops", type=int, default=5, help="a yardstick chain's length (bare Celery no-op hops)")
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--drain", type=float, default=120.0, help="how long to wait for tickets still in flight")
    p.add_argument("--wait-load", type=float, default=0.0, help="first wait until the 1-min load average is below")
    p.add_argument("--wait-timeout", type=float, default=3600.0)
    p.add_argument("--keep", action="store_true", help="keep the system's directory (database, logs)")
    p.add_argument("--fuse", default=None, help="PIPELINE_FUSE for the system ('' = one hop per stage)")
    p.add_argument(
        "--ref", default=None, help="before/after: run REV and this checkout in turns (ref, head, head, ref)"
    )
    p.add_argument("--rounds", type=int, default=4, help="with --ref: how many runs in all (even: ref and head alike)")
    a = p.parse_args(argv)
    tiers = a.tiers.split(",") if a.tiers != "auto" else ["rules", "local"]
    if "local" in tiers and not (ROOT / "agents" / "tiers" / "local.py").exists():
        tiers.remove("local")
    out = a.out or ROOT / "var" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    cfg = Config(
        out=out.resolve(),
        seconds=a.seconds,
        concurrency=a.concurrency,
        fractions=tuple(float(f) for f in a.fractions.split(",") if f),
        existing=a.existing,
        scale_to=a.scale_to,
        soak=a.soak,
        tiers=tuple(tiers),
        claude=a.claude,
        claude_rate=a.claude_rate,
        claude_rpm=a.claude_rpm,
        claude_latency=a.claude_latency,
        customers=a.customers,
        hops=a.hops,
        warmup=a.warmup,
        drain=a.drain,
        keep=a.keep,
        fuse=a.fuse,
    )
    return cfg, a


def wait_for_quiet(threshold: float, timeout: float, progress: Progress) -> None:
    deadline = time.monotonic() + timeout
    while (load := os.getloadavg()[0]) >= threshold:
        if time.monotonic() > deadline:
            progress.say(f"load average still {load:.2f} after {timeout:.0f} s: measuring anyway (see the report)")
            return
        progress.say(f"load average {load:.2f} ≥ {threshold}: waiting for a quieter machine")
        time.sleep(15)


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """`argv` less the given options and their values (`--opt value` or `--opt=value`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in options)):
            out.append(arg)
    return out


def main(argv: list[str]) -> int:
    from tooling.bench import plan, report

    cfg, args = parse(argv)
    if args.ref:
        from tooling.bench import compare

        return compare.main(args.ref, _without(argv, ("--ref", "--rounds", "--out")), cfg.out, args.rounds)
    progress = Progress().start()
    try:
        if args.wait_load:
            wait_for_quiet(args.wait_load, args.wait_timeout, progress)
        result = plan.execute(cfg, progress)
    finally:
        progress.stop()
    paths = report.write(result, cfg.out)
    latest = cfg.out.parent / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(cfg.out.name)
    print(paths["markdown"].read_text())
    print(f"report: {paths['json']}\n        {paths['markdown']}\n        {paths['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
