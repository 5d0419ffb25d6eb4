"""What the bench sends: real customer messages (the Banking77 training split, about 10 000)."""

from __future__ import annotations

import csv

import yaml

from agents.stages.parse import clean
from agents.stages.types import IntentPolicy
from agents.tiers.rules import RulesTier
from bench.system import PACK, ROOT

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
