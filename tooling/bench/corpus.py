"""What the bench sends: real customer messages (the Banking77 training split, about 10 000)."""

from __future__ import annotations

import csv
import random

import yaml

from agents.intents.rules import RulesTier
from agents.stages.parse import clean
from agents.stages.types import IntentPolicy
from tooling.bench.system import PACK, ROOT

CORPUS = ROOT / "agents" / "data" / "banking77" / "train.csv"


def corpus() -> list[tuple[str, str]]:
    """(text, Banking77 category) pairs."""
    with CORPUS.open(newline="", encoding="utf-8") as fh:
        return [(row["text"], row["category"]) for row in csv.DictReader(fh)]


def rule_misses(texts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The texts the pack's rules do not answer (the ones a cheaper tier may hand to Claude), found
    with the rules tier itself, in this process, on parse's normalised text."""
    pack = yaml.safe_load(PACK.read_text(encoding="utf-8"))
    catalog = {i["name"]: IntentPolicy(name=i["name"], rules=tuple(i.get("rules") or ())) for i in pack["intents"]}
    tier = RulesTier()
    return [(text, cat) for text, cat in texts if tier.classify(clean("", text), catalog) is None]


def blends(texts: list[tuple[str, str]], n: int, seed: int = 7) -> list[tuple[str, str]]:
    """Harder requests than the training split (which the local model has seen): the first half of
    one message joined to the second half of another, of a different category — what a cheaper tier
    should be unsure of and hand to Claude."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        (a, ca), (b, cb) = rng.sample(texts, 2)
        if ca != cb:
            wa, wb = a.split(), b.split()
            out.append((" ".join(wa[: max(1, len(wa) // 2)] + wb[len(wb) // 2 :]), f"{ca}+{cb}"))
    return out
