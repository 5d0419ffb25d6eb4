"""CLI: ``python -m tooling.llm_simulator --port 8765 --rpm 600 --fault-rate 529=0.05,500=0.05 --seed 1``."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys

from .config import FAULT_KINDS, SimulatorConfig, latency_from_min_median_max, parse_fault_rates, parse_latency
from .server import serve_forever


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tooling.llm_simulator",
        description="Local simulator of the Anthropic Messages API (answers say nothing about model quality).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="fault kinds: " + "; ".join(f"{k}: {v}" for k, v in FAULT_KINDS.items()),
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (0 = any free port; default 8765)")
    g = p.add_argument_group("rate limits (0 = unlimited)")
    g.add_argument("--rpm", type=int, default=0, help="requests per minute on POST /v1/messages")
    g.add_argument("--itpm", type=int, default=0, help="input tokens per minute (uncached + cache writes)")
    g.add_argument("--otpm", type=int, default=0, help="output tokens per minute")
    g.add_argument(
        "--spend-limit-after",
        type=int,
        default=None,
        metavar="N",
        help="after N accepted messages, answer every further one with the spend-limit 429",
    )
    g = p.add_argument_group("latency")
    g.add_argument(
        "--latency",
        default=None,
        metavar="SPEC",
        help="e.g. lognormal:median=0.05,p99=0.5[,min=..,max=..,per_token=..] | uniform:min=..,max=.. "
        "| fixed:0.3 | none (default: lognormal median 15 ms, clipped to [2, 150] ms)",
    )
    g.add_argument("--latency-min", type=float, default=None, help="clipped-lognormal lower bound, seconds")
    g.add_argument("--latency-median", type=float, default=None, help="clipped-lognormal median, seconds")
    g.add_argument("--latency-max", type=float, default=None, help="clipped-lognormal upper bound, seconds")
    g.add_argument("--latency-p99", type=float, default=None, help="clipped-lognormal p99 (before clipping), seconds")
    g.add_argument("--latency-per-token", type=float, default=None, help="extra seconds per generated output token")
    g.add_argument("--error-latency", type=float, default=0.0, help="delay before 4xx/5xx answers, seconds")
    g = p.add_argument_group("faults")
    g.add_argument(
        "--fault-rate",
        action="append",
        default=[],
        metavar="KIND=RATE[,KIND=RATE]",
        help="e.g. 529=0.05,500=0.05,timeout=0.01,disconnect=0.01,malformed=0.01,truncated=0.02,"
        "refusal=0.01 (repeatable)",
    )
    g.add_argument(
        "--fault-script",
        default=None,
        metavar="KIND,KIND,...",
        help="outcomes forced for the first requests, e.g. 529,529,ok",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the fault/latency RNGs (default 0)")
    g.add_argument(
        "--hang-seconds",
        type=float,
        default=600.0,
        help="how long a 'timeout' fault holds a connection at most (default 600)",
    )
    g = p.add_argument_group("prompt cache / batches / misc")
    g.add_argument(
        "--cache-min-tokens", type=int, default=1024, help="shortest cacheable prefix in tokens (default 1024)"
    )
    g.add_argument(
        "--cache-ttl",
        type=float,
        default=None,
        help="override cache TTL in seconds (default: 300, or 3600 for ttl=1h blocks)",
    )
    g.add_argument("--batch-delay", type=float, default=0.3, help="seconds a batch stays in_progress (default 0.3)")
    g.add_argument(
        "--no-require-api-key", action="store_true", help="accept requests without x-api-key / Authorization"
    )
    g.add_argument("--log-level", default="WARNING")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    latency_flags = (args.latency_min, args.latency_median, args.latency_max, args.latency_p99)
    if args.latency is not None and any(v is not None for v in latency_flags):
        raise SystemExit("give either --latency or --latency-min/--latency-median/--latency-max/--latency-p99")
    if args.latency is not None:
        latency = parse_latency(args.latency)
    elif any(v is not None for v in latency_flags):
        latency = latency_from_min_median_max(*latency_flags)
    else:
        latency = parse_latency(None)
    if args.latency_per_token is not None:
        latency.per_token = args.latency_per_token
    rates = {}
    for spec in args.fault_rate:
        for k, v in parse_fault_rates(spec).items():
            rates[k] = rates.get(k, 0.0) + v
    script: list[str] = [x.strip() for x in (args.fault_script or "").split(",") if x.strip()]
    cfg = SimulatorConfig(
        rpm=args.rpm,
        itpm=args.itpm,
        otpm=args.otpm,
        spend_limit_after=args.spend_limit_after,
        latency=latency,
        error_latency=args.error_latency,
        fault_rates=rates,
        fault_script=script,
        seed=args.seed,
        hang_seconds=args.hang_seconds,
        cache_min_tokens=args.cache_min_tokens,
        cache_ttl=args.cache_ttl,
        batch_delay=args.batch_delay,
        require_api_key=not args.no_require_api_key,
    )
    return cfg.validate()


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"--host must be a loopback address (127.0.0.0/8, ::1, localhost), not {host!r}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _check_loopback(args.host)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        raise SystemExit(f"bad configuration: {e}") from None

    def ready(sim) -> None:
        print(f"anthropic simulator listening on {sim.base_url}", flush=True)
        print("config: " + json.dumps(sim.config.to_dict(), sort_keys=True), flush=True)

    async def run() -> None:
        task = asyncio.ensure_future(serve_forever(args.host, args.port, cfg, ready_cb=ready))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, task.cancel)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
