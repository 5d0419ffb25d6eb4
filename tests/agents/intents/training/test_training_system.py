"""The rules -> model -> decide figure on held-out folds (pure, no database)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from agents.intents.localmodel import load_csv
from agents.intents.rules import RulesTier
from agents.intents.training.system import FoldModelTier, catalog_for, load_pack, run_stages, system_cross_validate
from agents.intents.training.train import train_model
from tooling.research.cv import main

ROOT = Path(__file__).resolve().parents[4]
DATA = ROOT / "agents" / "data" / "banking77" / "train.csv"
PACK = ROOT / "agents" / "packs" / "banking77.yaml"
INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "age_limit", "compromised_card"]


def _subset(per_intent: int = 24) -> tuple[list[str], list[str]]:
    texts, labels = load_csv(DATA)
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y in INTENTS]
    random.Random(0).shuffle(rows)
    taken: dict[str, int] = {}
    out = []
    for text, label in rows:
        if taken.get(label, 0) < per_intent:
            taken[label] = taken.get(label, 0) + 1
            out.append((text, label))
    return [t for t, _ in out], [y for _, y in out]


def test_the_catalogue_takes_the_models_thresholds_with_the_floors_learning_applies():
    texts, labels = _subset()
    model = train_model(texts, labels, folds=2)
    catalog = catalog_for(load_pack(PACK), model)

    assert len(catalog) == 77 and catalog["exchange_rate"].threshold == round(model.threshold_for("exchange_rate"), 4)
    assert catalog["lost_or_stolen_card"].risk == "high" and catalog["lost_or_stolen_card"].threshold >= 0.9
    assert catalog["compromised_card"].always_review
    assert catalog["top_up_failed"].threshold == 0.9  # an intent the model does not know keeps the pack's


def test_the_model_decides_where_a_rule_matches_and_an_always_reviewed_intent_is_never_automated():
    texts, labels = _subset()
    model = train_model(texts, labels, folds=2)
    catalog = catalog_for(load_pack(PACK), model)
    tiers = [RulesTier(), FoldModelTier(model)]

    hit = run_stages("Where is my card? It still hasn't arrived.", catalog, tiers)
    reviewed = run_stages("I think my card has been compromised, someone used it", catalog, tiers)

    assert (hit["intent"], hit["tier"], hit["automated"], hit["escalate"]) == ("card_arrival", "local", True, None)
    assert "card_arrival" in hit["candidates"] and hit["cpu_ms"] > 0
    assert not reviewed["automated"] and reviewed["escalate"] in ("policy", "low_confidence")


def test_system_cross_validation_pools_every_held_out_request_and_splits_rules_from_model():
    texts, labels = _subset()

    report = system_cross_validate(texts, labels, pack=PACK, folds=3)

    assert report["n"] == len(texts)
    system, rules, by_model = report["system"], report["system_by_rules"], report["system_by_model"]
    assert system["n"] == by_model["n"] + report["system_by_encoder"]["n"] > 0
    assert rules["n"] == 0  # a model answers every request: the rules are evidence, never the decision
    assert 0 <= system["share"] <= 1 and 0.5 <= report["model_accuracy"] <= 1
    assert sum(report["escalations"].values()) == report["n"] - system["n"]


def test_the_cli_prints_the_system_line(tmp_path, capsys):
    texts, labels = _subset(12)
    data = tmp_path / "small.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(zip(texts, labels, strict=True))

    assert main(["--data", str(data), "--folds", "2", "--system"]) == 0

    assert "SYSTEM automated system=" in capsys.readouterr().out
