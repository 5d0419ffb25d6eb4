"""Reading what Claude cost: per trace (the row itself), per ticket, per intent, per client, per day."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from agents.models import Trace

CLAUDE = "claude"


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """A UTC day as a half-open range (so the `started_at` index is used)."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _traces_on(day: date) -> QuerySet[Trace]:
    start, end = day_bounds(day)
    return Trace.objects.filter(started_at__gte=start, started_at__lt=end)


_TOTALS: dict[str, Any] = {
    "cost_usd": Sum("cost_usd"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "calls": Count("id", filter=Q(tier=CLAUDE, cache_hit=False)),
    "cache_hits": Count("id", filter=Q(tier=CLAUDE, cache_hit=True)),
}


def _rows(qs: QuerySet[Trace], group: str, name: str) -> list[dict[str, Any]]:
    rows = qs.values(group).annotate(**_TOTALS).order_by("-cost_usd")
    return [{name: r[group], **{k: r[k] or 0 for k in _TOTALS}} for r in rows]


def llm_cost_for_ticket(*, ticket_id: str) -> dict[str, Any]:
    """Tokens and money a ticket's stage attempts used (retries included)."""
    totals = Trace.objects.filter(ticket_id=ticket_id).aggregate(**_TOTALS)
    return {k: v or 0 for k, v in totals.items()}


def llm_cost_by_intent(*, day: date) -> list[dict[str, Any]]:
    """Per intent (as the ticket ended up), for one UTC day."""
    return _rows(_traces_on(day), "ticket__intent", "intent")


def llm_cost_by_client(*, day: date) -> list[dict[str, Any]]:
    """Per client, for one UTC day."""
    return _rows(_traces_on(day), "ticket__client_id", "client_id")


def client_spend_on(*, client_id: int, day: date) -> Decimal:
    """What one client's tickets cost on one UTC day, as the traces recorded it."""
    total = _traces_on(day).filter(ticket__client_id=client_id).aggregate(s=Sum("cost_usd"))["s"]
    return total or Decimal("0")
