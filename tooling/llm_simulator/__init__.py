"""A local simulator of the Anthropic Messages API, for tests and benchmarks.

It speaks the wire format of the installed ``anthropic`` SDK (messages,
count_tokens, message batches, rate-limit headers, error bodies), with
configurable latency, rate limits and injected faults, and answers
deterministically from the request text.

Its answers say nothing about model quality: they are a hash of the request
plus a crude keyword overlap, nothing more.

Quick start::

    from tooling.llm_simulator import start_simulator
    import anthropic

    with start_simulator(rpm=600, seed=1) as sim:
        client = anthropic.Anthropic(api_key="test", base_url=sim.base_url, max_retries=0)
        client.messages.create(model="claude-sonnet-4-5", max_tokens=256,
                               messages=[{"role": "user", "content": "hello"}])

CLI: ``python -m tooling.llm_simulator --port 8765 --rpm 600 --fault-rate 529=0.05``.
See docs/simulator.md.
"""

from .config import FAULT_KINDS, LatencySpec, SimulatorConfig, parse_fault_rates, parse_latency
from .responder import count_input_tokens, rank_enum_by_overlap, simulate_reply
from .server import Simulator, SimulatorHandle, serve_forever, start_simulator

__all__ = [
    "FAULT_KINDS",
    "LatencySpec",
    "Simulator",
    "SimulatorConfig",
    "SimulatorHandle",
    "count_input_tokens",
    "parse_fault_rates",
    "parse_latency",
    "rank_enum_by_overlap",
    "serve_forever",
    "simulate_reply",
    "start_simulator",
]
