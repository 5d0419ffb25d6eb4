"""Money and tokens as they are spent: per-client daily spend for budgets, per-model usage.

Redis holds the running totals (one INCRBYFLOAT per call, shared by every worker); the traces in
Postgres are the record. A client's counter starts each day from the traces (`client_spend_on`),
so a lost Redis only loses the calls made while it was away.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agents.llm.base import Usage
from agents.llm.config import llm_settings
from agents.llm.scope import TicketScope
from agents.llm.store import key, redis_client

OK, DOWNGRADE, HUMAN = "ok", "downgrade", "human"
TWO_DAYS = 2 * 86_400


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def client_spend_today(client_id: int) -> float:
    """The client's spend today (UTC), seeded from the traces the first time it is asked."""
    from agents.llm.selectors import client_spend_on  # needs the ORM: imported when used

    r, spent_key = redis_client(), key("spend", _today(), client_id)
    raw = r.get(spent_key)
    if raw is None:
        seeded = float(client_spend_on(client_id=client_id, day=datetime.now(UTC).date()))
        r.set(spent_key, repr(seeded), nx=True, ex=TWO_DAYS)
        raw = r.get(spent_key)
    return float(raw or 0)


def spend_record(*, client_id: int | None, model_class: str, usage: Usage, cost: float, batch: bool = False) -> None:
    """Add one call to the client's spend today and to the day's per-model usage."""
    r, day = redis_client(), _today()
    if client_id is not None:
        client_spend_today(client_id)  # seed first, so the increment lands on the day's true total
    usage_key = key("usage", day)
    prefix = f"{model_class}:{'batch' if batch else 'live'}"
    pipe = r.pipeline(transaction=False)
    if client_id is not None:
        pipe.incrbyfloat(key("spend", day, client_id), cost)
    for field, value in (
        ("calls", 1),
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_write", usage.cache_write_tokens),
        ("cache_read", usage.cache_read_tokens),
    ):
        pipe.hincrby(usage_key, f"{prefix}:{field}", value)
    pipe.hincrbyfloat(usage_key, f"{prefix}:cost_usd", cost)
    pipe.expire(usage_key, 8 * 86_400)
    pipe.execute()


def usage_on(day: str | None = None) -> dict[str, float]:
    """The day's usage counters: `{"small:live:calls": 12, "small:live:cache_read": 9000, ...}`."""
    raw = redis_client().hgetall(key("usage", day or _today()))
    return {k.decode(): float(v) for k, v in raw.items()}


def client_budget(scope: TicketScope) -> float | None:
    """The client's daily budget in USD (its own, else the default); None when it has none."""
    cfg = llm_settings()
    own: dict[str, Any] = cfg["CLIENT_BUDGETS_USD"] or {}
    for name in (str(scope.client_id), scope.client_name):
        if name in own:
            return own[name]
    return cfg["DAILY_BUDGET_USD"]


def budget_verdict(scope: TicketScope) -> str:
    """ "ok", or what to do once the client is over budget: "downgrade" the model or go to a "human"."""
    budget = client_budget(scope)
    if scope.client_id is None or budget is None:
        return OK
    spent = client_spend_today(scope.client_id)
    if spent < budget:
        return OK
    cfg = llm_settings()
    if cfg["OVER_BUDGET"] == DOWNGRADE and spent < budget * float(cfg["HARD_BUDGET_FACTOR"]):
        return DOWNGRADE
    return HUMAN
