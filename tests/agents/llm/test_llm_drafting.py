"""draft_reply: a reply from the intent, the request and the customer's recent history; never cached."""

from __future__ import annotations

import pytest

from agents.llm.anthropic_client import AnthropicClient
from agents.llm.drafting import draft_reply, draft_request
from agents.llm.prompts import history_lines
from agents.stages.types import IntentPolicy

POLICY = IntentPolicy("card_arrival", "The card has not arrived.", reply_template="Cards arrive in 5 days.")
HISTORY = [
    {
        "at": f"2025-01-{day:02d}T10:00:00+00:00",
        "status": "resolved",
        "intent": "card_arrival",
        "reply": f"Reply number {day} " + "with a lot of words " * 30,
    }
    for day in range(20, 8, -1)  # newest first, as the pipeline gives it
]


@pytest.fixture
def client(llm):
    return AnthropicClient()


def test_a_reply_is_drafted_with_its_usage_and_cost(client):
    draft = draft_reply(client, policy=POLICY, text="Where is my card? [[confidence:0.9]]", history=HISTORY)

    assert draft.reply and draft.problem == ""
    assert draft.confidence == 0.9 and draft.model == "claude-haiku-4-5"
    assert draft.input_tokens > 0 and draft.output_tokens > 0 and draft.cost_usd > 0


def test_the_prompt_holds_only_the_last_interactions_compact_never_the_transcript(settings, llm, configure):
    configure(DRAFT={"history_size": 8})
    request = draft_request(policy=POLICY, text="Where is my card?", history=HISTORY, model_class="small")
    prompt = request.messages[0]["content"]

    shown = [line for line in prompt.splitlines() if line.startswith("- 2025-")]
    assert len(shown) == 8 and shown[0].startswith("- 2025-01-13") and shown[-1].startswith("- 2025-01-20")
    assert all(len(line) < 220 for line in shown)
    assert len(history_lines(HISTORY, 50)) == 10 and len(history_lines(HISTORY, 1)) == 5  # N is kept in 5-10


def test_an_unusable_draft_is_no_reply_and_never_an_exception(client):
    for marker in (
        "[[fault:refusal]]",
        "[[reply:oops]]",
        "[[fault:truncated]]",
        '[[reply:{"reply": "", "confidence": 1}]]',
    ):
        draft = draft_reply(client, policy=POLICY, text=f"Where is my card? {marker}", history=[])
        assert draft.reply is None and draft.problem, marker


def test_drafts_are_never_cached_and_a_risky_intent_gets_the_large_model(client, posts):
    risky = IntentPolicy("lost_or_stolen_card", "Lost card.", risk="high")
    first = draft_reply(client, policy=risky, text="I lost my card", history=[])
    second = draft_reply(client, policy=risky, text="I lost my card", history=[])

    assert posts() == 2
    assert first.model == second.model == "claude-sonnet-4-6"
