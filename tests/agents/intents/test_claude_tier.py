"""ClaudeTier.classify: answers, the exact cache, bad output, failures, routing and budgets."""

from __future__ import annotations

import pytest

from agents.intents.claude import ClaudeTier
from agents.llm.base import LimiterBusy, Usage
from agents.llm.cache import AnswerCache
from agents.llm.scope import TicketScope, ticket_scope
from agents.llm.spend import client_spend_today, spend_record, usage_on
from agents.stages.types import StageError
from tests.factories import client_with_token


@pytest.fixture
def tier(llm):
    return ClaudeTier()


def test_claude_answers_with_an_intent_from_the_pack_its_tokens_and_its_cost(tier, catalog):
    answer = tier.classify("Hi, my card has still not arrived after two weeks", catalog)

    assert answer.tier == "claude" and answer.model == "claude-haiku-4-5"
    assert answer.intent == "card_arrival" and 0 < answer.confidence <= 1
    assert answer.input_tokens > 0 and answer.output_tokens > 0 and answer.cost_usd > 0
    assert not answer.cache_hit
    assert usage_on()["small:live:calls"] == 1


def test_the_same_question_is_answered_from_the_exact_cache(tier, catalog, posts):
    first = tier.classify("What is the exchange rate for euros?", catalog)
    again = tier.classify("  what is the EXCHANGE rate for euros? ", catalog)  # normalised: the same question

    assert (again.intent, again.confidence) == (first.intent, first.confidence)
    assert again.cache_hit and again.cost_usd == 0 and again.input_tokens == 0
    assert posts() == 1
    assert AnswerCache().stats() == {"hits": 1, "misses": 1, "ratio": 0.5}


def test_the_cache_never_answers_one_tenant_with_another_tenants_question(tier, catalog, posts, db):
    (one, _), (two, _) = client_with_token(name="one"), client_with_token(name="two")
    with ticket_scope(TicketScope(client_id=one.pk, client_name=one.name)):
        tier.classify("What is the exchange rate for euros?", catalog)
    with ticket_scope(TicketScope(client_id=two.pk, client_name=two.name)):
        other = tier.classify("What is the exchange rate for euros?", catalog)
    with ticket_scope(TicketScope(client_id=one.pk, client_name=one.name)):
        again = tier.classify("What is the exchange rate for euros?", catalog)

    assert not other.cache_hit  # tenant 2 learns nothing of what tenant 1 asked
    assert again.cache_hit
    assert posts() == 2


@pytest.mark.parametrize(
    "marker",
    [
        "[[reply:this is not JSON at all]]",
        '[[reply:{"intent": "open_a_casino", "confidence": 0.99}]]',
        "[[confidence:7]]",
        "[[fault:refusal]]",
        "[[fault:truncated]]",
    ],
    ids=["not-json", "intent-not-in-pack", "confidence-out-of-range", "refusal", "truncated"],
)
def test_bad_output_abstains_with_its_cost_and_is_not_cached(tier, catalog, posts, marker):
    text = f"Where is my card? {marker}"

    answer = tier.classify(text, catalog)

    assert answer.intent == "" and answer.confidence == 0.0  # not in the catalogue: classify moves on
    assert answer.cost_usd > 0 and answer.tier == "claude"
    tier.classify(text, catalog)
    assert posts() == 2  # asked again: a bad answer is never cached


@pytest.mark.parametrize("fault", ["529", "timeout"])
def test_a_transient_failure_raises_a_retryable_stage_error(tier, catalog, configure, llm, fault):
    configure(TIMEOUT_SECONDS=0.5)
    llm.configure(fault_script=[fault], hang_seconds=1)

    with pytest.raises(StageError) as failed:
        ClaudeTier().classify("Where is my card?", catalog)

    assert failed.value.permanent is False


def test_a_spend_limit_sends_the_ticket_to_a_person_without_crashing(tier, catalog, llm, posts):
    llm.configure(spend_limit_after=0)

    assert tier.classify("Where is my card?", catalog) is None
    assert tier.classify("Is my card lost?", catalog) is None
    assert posts() == 1  # the second ticket did not even ask: Claude is marked unavailable


def test_the_small_model_by_default_the_large_one_where_a_rule_says_so(tier, catalog, configure):
    assert tier.classify("Where is my card?", catalog).model == "claude-haiku-4-5"

    with ticket_scope(TicketScope(prior_intent="lost_or_stolen_card", prior_confidence=0.6)):
        assert tier.classify("Someone took my wallet", catalog).model == "claude-sonnet-4-6"  # risk high
    assert tier.classify("my card " * 300, catalog).model == "claude-sonnet-4-6"  # a long request
    configure(ROUTING={"large_below_prior_confidence": 0.3})
    with ticket_scope(TicketScope(prior_intent="card_arrival", prior_confidence=0.1)):
        assert tier.classify("It never came", catalog).model == "claude-sonnet-4-6"  # very unsure before


@pytest.mark.django_db
def test_a_client_over_its_daily_budget_gets_the_small_model_then_people(tier, catalog, configure, posts):
    client, _ = client_with_token()
    configure(CLIENT_BUDGETS_USD={client.name: 0.01}, OVER_BUDGET="downgrade", HARD_BUDGET_FACTOR=2.0)
    scope = TicketScope(client_id=client.pk, client_name=client.name, prior_intent="lost_or_stolen_card")
    spend_record(client_id=client.pk, model_class="large", usage=Usage(100, 10), cost=0.015)
    assert client_spend_today(client.pk) == pytest.approx(0.015)

    with ticket_scope(scope):
        assert tier.classify("Someone took my wallet", catalog).model == "claude-haiku-4-5"  # downgraded
        spend_record(client_id=client.pk, model_class="small", usage=Usage(100, 10), cost=0.01)
        assert tier.classify("Someone took my purse", catalog) is None  # past budget × 2: people
    assert posts() == 1
    configure(OVER_BUDGET="human")
    with ticket_scope(TicketScope(client_id=client.pk, client_name=client.name)):
        assert tier.classify("A brand new question", catalog) is None


def test_a_busy_limiter_puts_the_call_off_but_a_tickets_last_attempt_waits_for_it(tier, catalog, configure, settings):
    configure(MAX_WAIT_SECONDS=0.2, HEADROOM=1.0, LIMITS={"small": {"rpm": 60}})  # one a second
    tier.classify("Where is my card?", catalog)

    with pytest.raises(LimiterBusy) as busy:
        tier.classify("Is my card lost?", catalog)
    assert busy.value.deferred and 0 < busy.value.retry_after <= 1.0

    last = TicketScope(attempt=settings.PIPELINE["MAX_ATTEMPTS"] - 1)
    with ticket_scope(last):
        assert tier.classify("Is my card stolen?", catalog).tier == "claude"
