"""Intent rules run on RE2: a bad rule is refused where it is written and cannot stop the pipeline."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from agents.intents.packs import PackError, read_pack
from agents.intents.rules import RulesTier
from agents.intents.safe_regex import MAX_RULE_CHARS, RuleError, compile_rules, parse_rule, validate_rule
from agents.models import Intent
from agents.stages.types import IntentPolicy

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "agents" / "packs" / "banking77.yaml"
TRAIN = REPO / "agents" / "data" / "banking77" / "train.csv"

REFUSED = {
    "a look-behind": r"(?<!not )refund",
    "a look-ahead after the start": r"refund(?! policy)",
    "a back-reference": r"(\w+) \1",
    "an unbalanced group": r"(refund",
    "a repeat RE2 will not unroll": r"a{1001}",
    "a rule too long": "a" * (MAX_RULE_CHARS + 1),
    "a program too large": r"(\w{0,1000}){0,1000}",
    "a guard before a top-level |": r"^(?!.*x)a|b",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_rule_re2_cannot_run_in_linear_time_is_refused_with_the_reason(case: str) -> None:
    with pytest.raises(RuleError):
        validate_rule(REFUSED[case])


def test_leading_guards_mean_what_they_meant_under_re() -> None:
    rule = r"^(?!.*\b(lost|stolen)\b)(?=.*\bcard\b).*\b(arriv\w*|deliver\w*)\b"
    texts = ["my card has not arrived", "lost card not arrived", "when will it be delivered", "CARD ARRIVED"]

    assert [parse_rule(rule).search(t) for t in texts] == [bool(re.search(rule, t, re.I)) for t in texts]
    assert [parse_rule(rule).search(t) for t in texts] == [True, False, False, True]


def test_every_banking77_rule_matches_the_same_training_texts_under_re2_as_under_re() -> None:
    texts = [" ".join(row["text"].split()).lower() for row in csv.DictReader(TRAIN.open(encoding="utf-8"))]
    rules = [r for intent in yaml.safe_load(PACK.read_text(encoding="utf-8"))["intents"] for r in intent["rules"]]

    differing = []
    for rule in rules:
        old, new = re.compile(rule, re.I), parse_rule(rule)
        if [bool(old.search(t)) for t in texts] != [new.search(t) for t in texts]:
            differing.append(rule)

    assert len(rules) == 202 and differing == []


def test_the_pack_loader_refuses_a_rule_re2_cannot_take(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(yaml.safe_dump({"intents": [{"name": "refund", "rules": [r"(?<!no )refund"]}]}))

    with pytest.raises(PackError, match="refund"):
        read_pack(pack)


def test_a_bad_rule_already_stored_silences_itself_not_the_pipeline(caplog) -> None:
    catalog = {
        "broken": IntentPolicy(name="broken", rules=("(unclosed", r"(?<=x)y")),
        "card_arrival": IntentPolicy(name="card_arrival", rules=(r"\bcard\b.{0,20}\bnot arrived\b",)),
    }

    with caplog.at_level(logging.WARNING, logger="agents.intents.safe_regex"):
        answer = RulesTier().classify("my card has not arrived", catalog)

    assert answer is not None and answer.intent == "card_arrival"
    assert "intent rule skipped" in caplog.text


def test_the_rules_that_compile_still_run_when_a_sibling_does_not() -> None:
    assert compile_rules(["(unclosed", r"\brefund\b"]).search("where is my refund")


def intent_form_data(rules: list[str]) -> dict[str, str]:
    return {
        "name": "refund_status",
        "description": "",
        "examples": "[]",
        "rules": json.dumps(rules),
        "threshold": "0.9",
        "risk": "low",
        "allowed_actions": '["reply"]',
        "reply_template": "",
        "webhook_url": "",
        "is_active": "on",
    }


@pytest.mark.django_db
def test_the_admin_refuses_to_save_an_intent_whose_rule_re2_cannot_take(admin_client) -> None:
    response = admin_client.post("/admin/agents/intent/add/", intent_form_data([r"\brefund\b", r"(?<!no )refund"]))

    assert response.status_code == 200  # the form again, with its errors
    assert "does not compile under RE2" in response.content.decode()
    assert not Intent.objects.filter(name="refund_status").exists()


@pytest.mark.django_db
def test_the_admin_saves_an_intent_whose_rules_re2_takes(admin_client) -> None:
    response = admin_client.post("/admin/agents/intent/add/", intent_form_data([r"^(?!.*\bpolicy\b).*\brefund\b"]))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Intent.objects.get(name="refund_status").rules == [r"^(?!.*\bpolicy\b).*\brefund\b"]
