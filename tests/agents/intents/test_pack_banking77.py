"""The Banking77 intent pack (agents/packs/banking77.yaml): schema, catalogue and rule precision.

Pure Python (no database): run with
    .venv/bin/python -m pytest tests/agents/intents/test_pack_banking77.py -q -p no:django
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import string
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PACK = REPO / "agents" / "packs" / "banking77.yaml"
DATA = REPO / "agents" / "data" / "banking77"
MEASURE = REPO / "tooling" / "research" / "measure_rules.py"

ACTIONS = {"reply", "webhook"}
RISKS = {"low", "medium", "high"}
PLACEHOLDERS = {"customer_ref", "ticket_ref"}
TOP_KEYS = {"version", "name", "description", "defaults", "intents"}
INTENT_KEYS = {
    "name",
    "description",
    "examples",
    "rules",
    "threshold",
    "risk",
    "always_review",
    "allowed_actions",
    "reply_template",
}


def _load_measure() -> ModuleType:
    spec = importlib.util.spec_from_file_location("measure_rules", MEASURE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pack() -> dict[str, Any]:
    with PACK.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def intents(pack: dict[str, Any]) -> list[dict[str, Any]]:
    return pack["intents"]


@pytest.fixture(scope="module")
def categories() -> list[str]:
    return json.loads((DATA / "categories.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def measure() -> ModuleType:
    return _load_measure()


@pytest.fixture(scope="module")
def rows(measure: ModuleType) -> list[tuple[str, str]]:
    return measure.load_rows(DATA / "train.csv")


@pytest.fixture(scope="module")
def report(measure: ModuleType, pack: dict[str, Any], rows: list[tuple[str, str]]) -> Any:
    return measure.measure(pack, rows)


def _merged(pack: dict[str, Any], intent: dict[str, Any]) -> dict[str, Any]:
    return {**(pack.get("defaults") or {}), **intent}


def test_pack_loads_with_the_expected_top_level_keys(pack: dict[str, Any]) -> None:
    assert isinstance(pack, dict)
    assert TOP_KEYS <= set(pack)
    assert pack["version"] == 1
    assert pack["name"] == "banking77"
    assert isinstance(pack["description"], str) and pack["description"].strip()
    assert isinstance(pack["intents"], list)


def test_defaults_are_valid(pack: dict[str, Any]) -> None:
    defaults = pack["defaults"]
    assert 0 < float(defaults["threshold"]) <= 1
    assert set(defaults["allowed_actions"]) <= ACTIONS
    assert defaults["risk"] in RISKS


def test_exactly_the_77_categories_each_once(intents: list[dict[str, Any]], categories: list[str]) -> None:
    names = [i["name"] for i in intents]
    assert len(categories) == 77
    assert len(names) == len(set(names)), "an intent appears twice"
    assert sorted(names) == sorted(categories)


def test_intents_use_only_schema_keys(intents: list[dict[str, Any]]) -> None:
    for intent in intents:
        assert set(intent) <= INTENT_KEYS, (intent["name"], set(intent) - INTENT_KEYS)


def test_every_regex_compiles_and_is_lower_case(intents: list[dict[str, Any]]) -> None:
    for intent in intents:
        rules = intent.get("rules") or []
        assert isinstance(rules, list), intent["name"]
        for rule in rules:
            assert isinstance(rule, str), (intent["name"], rule)
            re.compile(rule)
            re.compile(rule, re.IGNORECASE)
            # texts are lower-cased before matching: an upper-case literal could never match
            literals = re.sub(r"\\.", "", rule)
            assert literals == literals.lower(), (intent["name"], rule)


def test_allowed_actions_thresholds_risk_and_review(pack: dict[str, Any], intents: list[dict[str, Any]]) -> None:
    for intent in intents:
        merged = _merged(pack, intent)
        name = intent["name"]
        actions = merged["allowed_actions"]
        assert isinstance(actions, list) and set(actions) <= ACTIONS, name
        assert "reply" in actions, f"{name}: every intent can at least reply"
        assert 0 < float(merged["threshold"]) <= 1, name
        assert merged["risk"] in RISKS, name
        assert isinstance(merged.get("always_review", False), bool), name


def test_descriptions_and_examples(intents: list[dict[str, Any]], rows: list[tuple[str, str]]) -> None:
    labelled = {(text, label) for text, label in rows}
    for intent in intents:
        name = intent["name"]
        desc = intent["description"]
        assert isinstance(desc, str) and 20 <= len(desc) <= 300, name
        examples = intent["examples"]
        assert isinstance(examples, list) and len(examples) == 3, name
        assert len(set(examples)) == 3, name
        for example in examples:
            assert (example, name) in labelled, f"{name}: example not in train.csv under this label: {example!r}"


def test_templates_use_only_the_allowed_placeholders(pack: dict[str, Any], intents: list[dict[str, Any]]) -> None:
    for intent in intents:
        template = _merged(pack, intent).get("reply_template")
        name = intent["name"]
        assert isinstance(template, str) and template.strip(), name
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
        assert fields <= PLACEHOLDERS, (name, fields - PLACEHOLDERS)
        rendered = template.format(customer_ref="CUST-1", ticket_ref="T-1")
        assert "{" not in rendered and "}" not in rendered, name


def test_webhook_and_always_review_are_used_sparingly(
    pack: dict[str, Any], intents: list[dict[str, Any]], rows: list[tuple[str, str]]
) -> None:
    review = {i["name"] for i in intents if _merged(pack, i).get("always_review")}
    share = sum(1 for _, label in rows if label in review) / len(rows)
    assert share < 0.10, f"always_review intents cover {share:.1%} of traffic"
    for intent in intents:
        merged = _merged(pack, intent)
        if "webhook" in merged["allowed_actions"] or merged.get("always_review"):
            assert merged["risk"] == "high", intent["name"]


def test_normalise_matches_the_runtime_contract(measure: ModuleType) -> None:
    assert measure.normalise("  My\u00a0CARD\t\n hasn\u2019t  ARRIVED ") == "my card hasn\u2019t arrived"
    assert measure.normalise("\uff21\uff34\uff2d") == "atm"  # full-width letters fold under NFKC


def test_overall_rule_precision_on_train(report: Any) -> None:
    assert report.single > 0
    assert report.overall_precision >= 0.97, f"overall rule precision {report.overall_precision:.2%}"
    assert report.coverage >= 0.15, f"coverage {report.coverage:.1%}"


def test_each_intent_rule_precision_on_train(intents: list[dict[str, Any]], report: Any) -> None:
    low = {}
    for intent in intents:
        if intent.get("rules"):
            precision = report.precision(intent["name"])
            if precision is None or precision < 0.97 or report.hits[intent["name"]] < 3:
                low[intent["name"]] = (report.hits[intent["name"]], precision)
    assert not low, f"intents whose rules miss 97 % precision or have < 3 hits: {low}"


def test_measure_script_runs(measure: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "sample.csv"
    with (
        (DATA / "train.csv").open(encoding="utf-8", newline="") as src,
        sample.open("w", encoding="utf-8", newline="") as dst,
    ):
        reader = csv.reader(src)
        writer = csv.writer(dst)
        for i, row in enumerate(reader):
            if i % 50 == 0:  # header + every 50th row
                writer.writerow(row)
    assert measure.main(["--pack", str(PACK), "--data", str(sample), "--per-rule", "--errors", "all"]) == 0
    out = capsys.readouterr().out
    assert "coverage (matched by exactly one intent)" in out
    assert "precision of those" in out
    assert "per rule" in out


def test_the_projects_own_loader_accepts_the_pack() -> None:
    """The project's own validator (agents.intents.packs.read_pack) accepts the pack."""
    from agents.intents.packs import read_pack

    parsed = read_pack(PACK)
    assert len(parsed) == 77
