"""Each stage as a pure function: no database, no broker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from agents.intents.rules import RulesTier
from agents.stages.classify import classify
from agents.stages.decide import decide, render_reply
from agents.stages.escalate import escalate
from agents.stages.execute import execute
from agents.stages.parse import clean, detect_language, parse
from agents.stages.types import IntentPolicy, StageContext, StageError, TicketInput, TierAnswer, ToolResult
from project.sensitive import find_sensitive, luhn_ok, mask

CATALOG = {
    "card_arrival": IntentPolicy(
        name="card_arrival",
        threshold=0.9,
        reply_template="Hi {customer_ref}, on its way ({ticket_ref}).",
        rules=(r"\bcard\b.{0,40}\b(not|n't|still)\b.{0,20}\barriv",),
    ),
    "lost_or_stolen_card": IntentPolicy(
        name="lost_or_stolen_card",
        threshold=0.9,
        allowed_actions=("reply", "webhook"),
        reply_template="Frozen.",
        webhook_url="http://downstream/freeze",
        rules=(r"\b(lost|stolen)\b.{0,20}\bcard\b",),
    ),
    "refund_not_showing_up": IntentPolicy(name="refund_not_showing_up", always_review=True, reply_template="Soon."),
}


def ticket(body: str = "", **context: Any) -> TicketInput:
    return TicketInput(
        id="0b7c2f9e-0000-0000-0000-000000000000",
        client_id=1,
        customer_ref="alice",
        channel="email",
        subject="",
        body=body,
        priority=1,
        context=context,
    )


class FixedTier:
    def __init__(self, name: str, answer: TierAnswer | None):
        self.name, self.answer, self.calls = name, answer, 0

    def classify(self, text: str, catalog: Mapping[str, IntentPolicy]) -> TierAnswer | None:
        self.calls += 1
        return self.answer


class RecordingTools:
    """An in-memory ToolRunner keyed like the ledger: the contract, not the database."""

    def __init__(self, fail: set[str] = frozenset()):
        self.done: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fail = fail

    def run(self, tool: str, arguments: Mapping[str, Any], *, idempotency_key: str) -> ToolResult:
        if tool in self.fail:
            return ToolResult(tool=tool, ok=False, data={"error": "boom"})
        if idempotency_key in self.done:
            return ToolResult(tool=tool, ok=True, replayed=True)
        self.done[idempotency_key] = (tool, dict(arguments))
        return ToolResult(tool=tool, ok=True)


# --- parse ------------------------------------------------------------------------------------


def test_parse_normalises_unicode_and_whitespace_and_drops_quotes_and_signatures():
    body = "Ｍy   card\u00a0is late!\n\nThanks,\nAlice\n\nOn Mon, Bob wrote:\n> old text"
    assert clean("", body) == "My card is late!"
    assert clean("Card", "late\n-- \nAlice") == "Card. late"


def test_parse_marks_card_numbers_emails_and_phones_for_masking():
    text = "card 4111 1111 1111 1111 mail me at a.b@example.com or +44 20 7946 0958, ref 1234567890123"
    spans = find_sensitive(text)
    types = [s["type"] for s in spans]
    assert types[:3] == ["card_number", "email", "phone"]
    assert types.count("card_number") == 1  # the reference fails the Luhn check: not a card
    masked = mask(text, spans)
    assert "4111" not in masked and "example.com" not in masked and "7946" not in masked
    assert "[CARD_NUMBER]" in masked and "[EMAIL]" in masked
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_parse_detects_the_language_and_a_request_for_a_person():
    assert detect_language("where is my card, I have been waiting") == "en"
    assert detect_language("no he recibido mi tarjeta y es para una compra") == "es"
    result = parse(ticket("Please let me talk to a real person about my card"), StageContext())
    assert result.output["wants_human"] is True and result.escalate is None


def test_parse_escalates_a_request_with_no_words_left():
    result = parse(ticket("> only a quote"), StageContext())
    assert result.escalate == "stage_failed" and result.confidence == 0.0


# --- classify ---------------------------------------------------------------------------------


def test_rules_answer_only_when_exactly_one_intent_matches():
    tier = RulesTier()
    assert tier.classify("my card still hasn't arrived", CATALOG).intent == "card_arrival"
    assert tier.classify("hello there", CATALOG) is None
    assert tier.classify("my lost card still hasn't arrived", CATALOG) is None  # two intents match


def test_classify_stops_at_the_first_tier_above_threshold():
    sure = FixedTier("a", TierAnswer("card_arrival", 0.95, "a"))
    later = FixedTier("b", TierAnswer("lost_or_stolen_card", 0.99, "b"))
    result = classify(ticket(parse={"text": "x"}), StageContext(catalog=CATALOG, tiers=[sure, later]))
    assert result.output["intent"] == "card_arrival" and result.tier == "a"
    assert later.calls == 0


def test_classify_falls_through_unsure_tiers_and_keeps_the_best_guess():
    unsure = FixedTier("a", TierAnswer("card_arrival", 0.5, "a"))
    abstains = FixedTier("b", None)
    result = classify(ticket(parse={"text": "x"}), StageContext(catalog=CATALOG, tiers=[unsure, abstains]))
    assert result.output["intent"] == "card_arrival" and result.confidence == 0.5
    assert [t["tier"] for t in result.output["tiers"]] == ["a", "b"]


def test_classify_ignores_an_intent_outside_the_catalogue():
    rogue = FixedTier("a", TierAnswer("refund_everything", 0.99, "a"))
    result = classify(ticket(parse={"text": "x"}), StageContext(catalog=CATALOG, tiers=[rogue]))
    assert result.output["intent"] == "" and result.confidence == 0.0


# --- decide -----------------------------------------------------------------------------------


def decided(intent: str, confidence: float, **parse_out: Any):
    t = ticket(
        parse={"text": "x", "language": "en", **parse_out}, classify={"intent": intent, "confidence": confidence}
    )
    return decide(t, StageContext(catalog=CATALOG))


def test_decide_plans_a_reply_from_the_template_when_confident():
    result = decided("card_arrival", 0.95)
    assert result.escalate is None
    assert result.output["plan"] == [{"tool": "reply", "args": {"text": "Hi alice, on its way (0b7c2f9e)."}}]


def test_decide_adds_the_downstream_call_only_where_the_policy_allows_it():
    assert [a["tool"] for a in decided("lost_or_stolen_card", 0.95).output["plan"]] == ["reply", "webhook"]


@pytest.mark.parametrize(
    ("intent", "confidence", "extra", "reason"),
    [
        ("card_arrival", 0.5, {}, "low_confidence"),
        ("", 0.0, {}, "low_confidence"),
        ("refund_not_showing_up", 0.99, {}, "policy"),
        ("card_arrival", 0.99, {"wants_human": True}, "customer_asked"),
        ("card_arrival", 0.99, {"language": "es"}, "low_confidence"),
    ],
)
def test_decide_says_when_a_person_is_needed(intent, confidence, extra, reason):
    assert decided(intent, confidence, **extra).escalate == reason


def test_a_template_cannot_reach_anything_but_its_two_placeholders():
    assert (
        render_reply("{customer_ref} {ticket_ref} {secret} {0.__class__}", ticket())
        == "alice 0b7c2f9e {secret} {0.__class__}"
    )


# --- execute and escalate ---------------------------------------------------------------------


def test_execute_runs_each_action_once_per_idempotency_key():
    tools = RecordingTools()
    plan = [{"tool": "reply", "args": {"text": "hi"}}, {"tool": "webhook", "args": {"intent": "lost_or_stolen_card"}}]
    t = ticket(decide={"intent": "lost_or_stolen_card", "plan": plan})
    first = execute(t, StageContext(catalog=CATALOG, tools=tools))
    second = execute(t, StageContext(catalog=CATALOG, tools=tools))
    assert first.output["action"] == "reply+webhook" and first.output["reply"] == "hi"
    assert len(tools.done) == 2 and all(r["replayed"] for r in second.output["results"])
    webhook_args = next(args for tool, args in tools.done.values() if tool == "webhook")
    assert webhook_args["url"] == "http://downstream/freeze"  # from the policy, never from the plan


def test_execute_refuses_an_action_outside_the_intents_allow_list():
    plan = [{"tool": "webhook", "args": {"intent": "card_arrival"}}]
    with pytest.raises(StageError) as err:
        execute(
            ticket(decide={"intent": "card_arrival", "plan": plan}),
            StageContext(catalog=CATALOG, tools=RecordingTools()),
        )
    assert err.value.permanent


def test_execute_uses_a_reviewers_decision_over_the_agents_plan():
    tools = RecordingTools()
    t = ticket(
        decide={"intent": "card_arrival", "plan": []}, human={"intent": "card_arrival", "reply": "Sorted, Alice."}
    )
    result = execute(t, StageContext(catalog=CATALOG, tools=tools))
    assert result.output["source"] == "human" and result.output["reply"] == "Sorted, Alice."


def test_a_failing_tool_is_a_transient_stage_error():
    t = ticket(decide={"intent": "card_arrival", "plan": [{"tool": "reply", "args": {"text": "hi"}}]})
    with pytest.raises(StageError) as err:
        execute(t, StageContext(catalog=CATALOG, tools=RecordingTools(fail={"reply"})))
    assert not err.value.permanent


def test_escalate_sends_one_holding_reply_and_describes_the_suggestion():
    tools = RecordingTools()
    t = ticket(
        classify={"intent": "card_arrival", "confidence": 0.4, "tier": "rules"},
        decide={"plan": [], "reply": "draft"},
        escalation={"reason": "low_confidence", "detail": "unsure"},
    )
    ctx = StageContext(catalog=CATALOG, tools=tools, holding_reply="We'll be in touch.")
    result = escalate(t, ctx)
    escalate(t, ctx)
    assert result.output["reason"] == "low_confidence"
    assert result.output["suggestion"]["intent"] == "card_arrival" and result.output["suggestion"]["reply"] == "draft"
    assert len(tools.done) == 1


def test_decide_hands_an_intent_without_a_canned_reply_to_the_llm_queue_when_one_is_configured():
    drafted = {**CATALOG, "card_arrival": IntentPolicy(name="card_arrival", threshold=0.9, reply_template="")}
    t = ticket(parse={"text": "x", "language": "en"}, classify={"intent": "card_arrival", "confidence": 0.95})
    handed = decide(t, StageContext(catalog=drafted, can_handoff=True))
    assert handed.handoff == "claude" and handed.escalate is None
    alone = decide(t, StageContext(catalog=drafted, can_handoff=False))
    assert alone.handoff is None and alone.escalate == "policy"  # no model to draft with: a person writes it


def test_a_high_risk_intent_chosen_by_the_language_model_waits_for_a_person():
    t = ticket(
        parse={"text": "x", "language": "en"},
        classify={"intent": "lost_or_stolen_card", "confidence": 0.99, "tier": "claude"},
    )
    risky = {
        **CATALOG,
        "lost_or_stolen_card": IntentPolicy(
            name="lost_or_stolen_card",
            risk="high",
            allowed_actions=("reply", "webhook"),
            reply_template="x",
            webhook_url="http://downstream/freeze",
        ),
    }
    assert decide(t, StageContext(catalog=risky)).escalate == "policy"
