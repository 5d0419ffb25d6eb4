"""The Claude tier: asked only when the cheaper tiers are unsure, on the `llm` queue's thread pool.

`classify` never crashes a stage on a bad answer. What it returns or raises, and why:

- an answer (`TierAnswer`, tier "claude") with tokens, cost and `cache_hit` filled;
- an abstention (`intent=""`, confidence 0, tokens and cost still filled) when the model's output
  is unusable: not JSON, an intent outside the pack, a confidence outside [0, 1], a refusal, a
  truncated answer. The classify stage then keeps the cheaper tiers' guess or leaves the intent
  empty, and decide sends the ticket to a person;
- None, without calling, when Claude is unavailable (a spend-limit 429 was seen) or the client is
  over its daily budget and the setting says "human": the ticket goes to a person, as if no tier
  were sure. We chose this over `StageError(permanent=True)`: a dead letter says "something broke",
  but nothing is broken, the account is only closed for a while and people can answer meanwhile;
- `StageError(permanent=False, retry_after=...)` (a `ModelError`) for a transient failure (429,
  529, 5xx, a timeout), so the pipeline's Celery retry with backoff and jitter takes over; the
  same for `LimiterBusy` and `BatchPending`, which put the call off without anything failing;
- `StageError(permanent=True)` when the provider rejects the request itself (400, 401, 403...).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping

from django.conf import settings
from django.utils.module_loading import import_string

from agents.llm import batches
from agents.llm.base import ModelClient, ModelReply, ModelRequest, ModelUnavailable
from agents.llm.cache import AnswerCache, cache_key
from agents.llm.config import llm_settings, model_id
from agents.llm.pricing import cost_usd
from agents.llm.prompts import classify_schema, classify_system, parse_classification
from agents.llm.routing import route
from agents.llm.scope import TicketScope, current_scope
from agents.llm.spend import HUMAN, OK, budget_verdict, spend_record
from agents.stages.types import IntentPolicy, TierAnswer

log = logging.getLogger(__name__)

DEFAULT_CLIENT = "agents.llm.anthropic_client.AnthropicClient"
LAST_ATTEMPT_WAIT = 120.0


class ClaudeTier:
    """Classify with Claude: exact cache, budget, routing, limits, batches for low priority."""

    name = "claude"

    def __init__(self, client: ModelClient | None = None) -> None:
        self.client: ModelClient = client or import_string(llm_settings().get("CLIENT", DEFAULT_CLIENT))()
        self.cache = AnswerCache()
        self._system: tuple[object, str] = (None, "")

    def _system_for(self, catalog: Mapping[str, IntentPolicy]) -> str:
        version = getattr(catalog, "version", None) or tuple(sorted(catalog))
        if self._system[0] != version:
            self._system = (version, classify_system(catalog))
        return self._system[1]

    def request(self, text: str, catalog: Mapping[str, IntentPolicy], model_class: str) -> ModelRequest:
        """The classification request for one text."""
        cfg = llm_settings()["CLASSIFY"]
        return ModelRequest(
            model_class=model_class,
            model=model_id(model_class),
            system=self._system_for(catalog),
            cache_system=True,
            messages=[{"role": "user", "content": text}],
            json_schema=classify_schema(catalog),
            max_tokens=int(cfg["max_tokens"]),
            expected_output_tokens=int(cfg["expected_output_tokens"]),
        )

    def classify(self, text: str, catalog: Mapping[str, IntentPolicy]) -> TierAnswer | None:
        if not catalog or not self.client.available():
            return None
        scope = current_scope()
        verdict = budget_verdict(scope)
        prior = catalog.get(scope.prior_intent)
        model_class, why = route(
            risk=prior.risk if prior else "",
            length=len(text),
            prior_confidence=scope.prior_confidence,
            downgrade=verdict != OK,
        )
        request = self.request(text, catalog, model_class)
        if scope.attempt >= settings.PIPELINE["MAX_ATTEMPTS"] - 1:
            # A ticket put off for over PIPELINE_DEFER_MAX_SECONDS pays attempts; its last one waits
            # for the limiter instead.
            request = dataclasses.replace(request, max_wait=LAST_ATTEMPT_WAIT)
        digest = cache_key(request.model, request.system, text, tenant=scope.client_id)
        hit = self.cache.get(digest)
        if hit is not None and hit.get("intent") in catalog:  # free, so even over budget
            return TierAnswer(hit["intent"], float(hit["confidence"]), self.name, request.model, cache_hit=True)
        if verdict == HUMAN:
            log.info("client %s over its daily budget: ticket %s goes to a person", scope.client_id, scope.ticket_id)
            return None
        reply, batched = self._ask(scope, request)
        if reply is None:
            return None
        cost = cost_usd(model_class, reply.usage, batch=batched)
        if not batched:  # a batch's cost was recorded when its results were collected
            spend_record(client_id=scope.client_id, model_class=model_class, usage=reply.usage, cost=cost)
        parsed = parse_classification(reply, catalog)
        tokens = {"input_tokens": reply.usage.total_input, "output_tokens": reply.usage.output_tokens, "cost_usd": cost}
        if isinstance(parsed, str):
            log.info("unusable answer from %s for ticket %s: %s", request.model, scope.ticket_id, parsed)
            return TierAnswer("", 0.0, self.name, request.model, **tokens)  # an abstention that still cost
        self.cache.put(digest, *parsed)
        log.debug("ticket %s classified by %s (%s)", scope.ticket_id, request.model, why)
        return TierAnswer(parsed[0], parsed[1], self.name, request.model, **tokens)

    def _ask(self, scope: TicketScope, request: ModelRequest) -> tuple[ModelReply | None, bool]:
        """`(reply, batched)`: the batch's answer for a low-priority ticket, else a live call."""
        if batches.batching_applies(scope):
            item = batches.batch_result(scope.ticket_id)
            if item is not None and item.reply is not None:
                return item.reply, True
            if item is None:
                left = batches.batch_park(scope, request) - time.time()
                if left > 0:
                    raise batches.BatchPending(f"waiting for a message batch (at most {left:.0f}s)", retry_after=left)
            # the batch errored or is late: ask live
        try:
            return self.client.complete(request), False
        except ModelUnavailable as exc:
            log.warning("Claude unavailable, ticket %s goes to a person: %s", scope.ticket_id, exc)
            return None, False
