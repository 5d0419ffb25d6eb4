"""Research: prompt tokens per Claude request, whole catalogue against the local tiers' candidate set.

`python -m tooling.research.claude_tokens [--data CSV] [--n 300]` trains a model on the data less a
held-back slice (the learning loop's 10 %, by text hash), classifies the slice, and for every request
the local decision leaves unsure sends the classification request Claude would get — once with the
whole catalogue, once with the candidate set — to the project's Messages API simulator (started here
on a free loopback port) through the real `anthropic` client, and reads `usage` back.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.intents.localmodel.data import in_holdout, load_csv
from agents.intents.training.system import DEFAULT_PACK, catalog_for, load_pack
from agents.intents.training.train import train_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "agents" / "data" / "banking77" / "train.csv"
MODEL = "claude-haiku-4-5"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _params(text: str, catalog: dict[str, Any]) -> dict[str, Any]:
    """The body ClaudeTier.request() + AnthropicClient.params() build for this catalogue."""
    from agents.llm.prompts import classify_schema, classify_system

    return {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        "system": [{"type": "text", "text": classify_system(catalog), "cache_control": {"type": "ephemeral"}}],
        "output_config": {"format": {"type": "json_schema", "schema": classify_schema(catalog)}},
    }


def _prompt_tokens(client: Any, params: dict[str, Any]) -> int:
    usage = client.messages.create(**params).usage
    return int(usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0))


def measure(texts: list[str], labels: list[str], n: int, port: int) -> dict[str, Any]:
    """Mean prompt tokens per unsure request, with the whole catalogue and with the candidate set."""
    import anthropic

    held = [in_holdout(t, 10) for t in texts]
    model = train_model(
        [t for t, h in zip(texts, held, strict=True) if not h], [y for y, h in zip(labels, held, strict=True) if not h]
    )
    catalog = catalog_for(load_pack(DEFAULT_PACK), model)
    slice_ = [(t, y) for t, y, h in zip(texts, labels, held, strict=True) if h]
    unsure = []
    for text, label in slice_:
        p = model.predict(text)
        if p.confidence < catalog[p.intent].threshold:
            unsure.append((text, label, [name for name, _ in p.candidates]))
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="simulator", max_retries=5)
    full, subset, covered = [], [], []
    for text, label, names in unsure[:n]:
        full.append(_prompt_tokens(client, _params(text, catalog)))
        subset.append(_prompt_tokens(client, _params(text, {k: catalog[k] for k in names})))
        covered.append(label in names)
    return {
        "slice": len(slice_),
        "unsure": len(unsure),
        "measured": len(full),
        "prompt_tokens_whole_catalogue": float(np.mean(full)),
        "prompt_tokens_candidates": float(np.mean(subset)),
        "candidates_k": model.candidates_k,
        "coverage": float(np.mean(covered)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.research.claude_tokens", description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n", type=int, default=300, help="unsure requests to send (each twice)")
    args = parser.parse_args(argv)
    texts, labels = load_csv(args.data)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tooling.llm_simulator", "--port", str(port)])
    try:
        time.sleep(2.0)
        result = measure(texts, labels, args.n, port)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        f"TOKENS unsure={result['unsure']}/{result['slice']} measured={result['measured']} "
        f"whole_catalogue={result['prompt_tokens_whole_catalogue']:.0f} candidates={result['prompt_tokens_candidates']:.0f} "
        f"(k={result['candidates_k']}, true intent in the set for {100 * result['coverage']:.1f}%)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
