"""Tools with typed arguments, run through the execution ledger: at most once per key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from django.db import connection, transaction
from django.utils import timezone

from agents.models import LedgerStatus, SideEffect
from agents.stages.types import OFFLINE_TOOLS, ToolResult
from project.netguard import OutboundBlocked
from tickets.webhooks.client import downstream_client as http_client


class ToolError(Exception):
    """A tool failed; `permanent` when trying again cannot help (a 4xx from downstream)."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def tool_reply(arguments: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Record the reply as sent; the client receives it through the ticket and its callback."""
    text = str(arguments.get("text", ""))
    if not text.strip():
        raise ToolError("reply text is empty", permanent=True)
    return {"chars": len(text), "kind": arguments.get("kind", "final"), "sent_at": timezone.now().isoformat()}


def tool_webhook(arguments: Mapping[str, Any], key: str) -> dict[str, Any]:
    """POST to the intent's downstream URL with the idempotency key, so its side also dedupes."""
    url = str(arguments.get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise ToolError(f"webhook url {url!r} is not http(s)", permanent=True)
    payload = {k: v for k, v in arguments.items() if k != "url"}
    try:
        response = http_client().post(url, json=payload, headers={"Idempotency-Key": key})
    except OutboundBlocked as exc:
        raise ToolError(f"webhook url refused: {exc}", permanent=True) from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise ToolError(f"downstream answered {response.status_code}")
    if response.status_code >= 400:
        raise ToolError(f"downstream refused with {response.status_code}", permanent=True)
    return {"status_code": response.status_code}


TOOLS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "reply": tool_reply,
    "webhook": tool_webhook,
}
_INSERT_SQL = (
    'INSERT INTO "{table}" ("ticket_id", "idempotency_key", "tool", "arguments", "status", "attempts", "result", '
    '"last_error", "created_at", "finished_at") VALUES (%s, %s, %s, %s, %s, %s, %s, \'\', %s, %s) '
    'ON CONFLICT ("idempotency_key") DO NOTHING RETURNING "id"'
)


def ledger_insert(
    *,
    ticket_id: str,
    idempotency_key: str,
    tool: str,
    arguments: Mapping[str, Any],
    status: str = LedgerStatus.STARTED,
    attempts: int = 0,
    result: Mapping[str, Any] | None = None,
) -> int | None:
    """Write the ledger row for `idempotency_key` if there is none, in one statement; its id, or
    None when the key was already there (`get_or_create` takes a read, a transaction and an insert)."""
    now = timezone.now()
    field = SideEffect._meta.get_field
    params = [
        ticket_id,
        idempotency_key,
        tool,
        field("arguments").get_db_prep_save(dict(arguments), connection),
        status,
        attempts,
        field("result").get_db_prep_save(dict(result or {}), connection),
        now,
        now if status == LedgerStatus.DONE else None,
    ]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL.format(table=SideEffect._meta.db_table), params)
        row = cursor.fetchone()
    return row[0] if row else None


class LedgerTools:
    """Runs tools for one ticket; a key already done returns its recorded result."""

    def __init__(self, ticket_id: str):
        self.ticket_id = ticket_id

    def run(self, tool: str, arguments: Mapping[str, Any], *, idempotency_key: str) -> ToolResult:
        if tool not in TOOLS:
            return ToolResult(tool=tool, ok=False, data={"error": f"unknown tool {tool}", "permanent": True})
        if tool in OFFLINE_TOOLS:
            done = self._record(tool, arguments, idempotency_key)
            if done is not None:
                return done
        ledger_insert(ticket_id=self.ticket_id, idempotency_key=idempotency_key, tool=tool, arguments=arguments)
        # The row lock serialises two deliveries of the same execute: the second waits, then
        # finds the effect done. A worker that dies mid-call releases it with its connection.
        with transaction.atomic():
            row = SideEffect.objects.select_for_update().get(idempotency_key=idempotency_key)
            if row.status == LedgerStatus.DONE:
                return ToolResult(tool=tool, ok=True, data=row.result, replayed=True)
            row.attempts += 1
            try:
                data = TOOLS[tool](arguments, idempotency_key)
            except ToolError as exc:
                row.status, row.last_error = LedgerStatus.FAILED, str(exc)
                row.save(update_fields=["status", "last_error", "attempts"])
                return ToolResult(tool=tool, ok=False, data={"error": str(exc), "permanent": exc.permanent})
            row.status, row.result, row.finished_at = LedgerStatus.DONE, data, timezone.now()
            row.save(update_fields=["status", "result", "finished_at", "attempts"])
        return ToolResult(tool=tool, ok=True, data=data)

    def _record(self, tool: str, arguments: Mapping[str, Any], idempotency_key: str) -> ToolResult | None:
        """An offline tool: its effect is the row, so it is written done in one statement. A key
        already done returns its recorded result; None sends anything else (a failed earlier
        attempt, bad arguments) through the locking path above."""
        try:
            data = TOOLS[tool](arguments, idempotency_key)
        except ToolError:
            return None
        inserted = ledger_insert(
            ticket_id=self.ticket_id,
            idempotency_key=idempotency_key,
            tool=tool,
            arguments=arguments,
            status=LedgerStatus.DONE,
            attempts=1,
            result=data,
        )
        if inserted is not None:
            return ToolResult(tool=tool, ok=True, data=data)
        row = SideEffect.objects.filter(idempotency_key=idempotency_key).values("status", "result").first()
        if row is not None and row["status"] == LedgerStatus.DONE:
            return ToolResult(tool=tool, ok=True, data=row["result"], replayed=True)
        return None
