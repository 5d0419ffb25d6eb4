"""Tools with typed arguments, run through the execution ledger: at most once per key."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from django.conf import settings
from django.db import connection
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


# The time left to the stage that runs a tool (`LedgerTools`' budget), for its HTTP call: execute
# runs on a thread pool, where Celery's time limits do not fire, so its calls end by its deadline.
_BUDGET: threading.local = threading.local()


def _time_left() -> float | None:
    deadline = getattr(_BUDGET, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


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
    left = _time_left()
    if left is not None and left <= 0:
        raise ToolError("the stage's time budget ran out before the call")
    try:
        extra = {} if left is None else {"timeout": min(left, settings.PIPELINE["WEBHOOK_TIMEOUT_SECONDS"])}
        response = http_client().post(url, json=payload, headers={"Idempotency-Key": key}, **extra)
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


_CLAIM_SQL = (
    'UPDATE "{table}" SET "attempts" = "attempts" + 1, "status" = %s, "last_error" = \'\' '
    'WHERE "idempotency_key" = %s AND "status" <> %s RETURNING "attempts"'
)
_FINISH_SQL = (
    'UPDATE "{table}" SET "status" = %s, "result" = %s, "last_error" = %s, "finished_at" = %s '
    'WHERE "idempotency_key" = %s AND "status" <> %s'
)


class LedgerTools:
    """Runs tools for one ticket; a key already done returns its recorded result.

    No transaction or row lock is held across a tool's call (an HTTP call can take the whole
    budget): the attempt is recorded `started` in one statement, the call made, its outcome recorded
    in another, each only while the row is not `done`. A key found `done` is never called again. A
    `started` row whose call's outcome is unknown (the worker died mid-call) is called again with the
    same `Idempotency-Key`, which the downstream dedupes (docs/reliability.md). Two deliveries of one
    execute never run together: the runner's conditional claim lets one through.

    `budget` seconds from construction (the stage's soft time limit): a call starts only within it
    and its HTTP timeout ends by it; past it the tool fails as a temporary error, which the stage
    retries or dead-letters as any other."""

    def __init__(self, ticket_id: str, *, budget: float | None = None):
        self.ticket_id = ticket_id
        budget = settings.PIPELINE["STAGE_SOFT_TIME_LIMIT_SECONDS"] if budget is None else budget
        self.deadline = time.monotonic() + float(budget)

    def run(self, tool: str, arguments: Mapping[str, Any], *, idempotency_key: str) -> ToolResult:
        if tool not in TOOLS:
            return ToolResult(tool=tool, ok=False, data={"error": f"unknown tool {tool}", "permanent": True})
        if tool in OFFLINE_TOOLS:
            done = self._record(tool, arguments, idempotency_key)
            if done is not None:
                return done
        if time.monotonic() >= self.deadline:
            return ToolResult(
                tool=tool, ok=False, data={"error": "the stage's time budget ran out", "permanent": False}
            )
        ledger_insert(ticket_id=self.ticket_id, idempotency_key=idempotency_key, tool=tool, arguments=arguments)
        table = SideEffect._meta.db_table
        done_value = LedgerStatus.DONE.value
        with connection.cursor() as cursor:  # autocommit: one statement, no lock held after it
            cursor.execute(_CLAIM_SQL.format(table=table), [LedgerStatus.STARTED.value, idempotency_key, done_value])
            claimed = cursor.fetchone()
        if claimed is None:  # done by an earlier delivery: its result, no second call
            row = SideEffect.objects.values("result").get(idempotency_key=idempotency_key)
            return ToolResult(tool=tool, ok=True, data=row["result"], replayed=True)
        _BUDGET.deadline = self.deadline
        try:
            data = TOOLS[tool](arguments, idempotency_key)
        except ToolError as exc:
            self._finish(idempotency_key, LedgerStatus.FAILED, {}, str(exc))
            return ToolResult(tool=tool, ok=False, data={"error": str(exc), "permanent": exc.permanent})
        finally:
            _BUDGET.deadline = None
        self._finish(idempotency_key, LedgerStatus.DONE, data, "")
        return ToolResult(tool=tool, ok=True, data=data)

    @staticmethod
    def _finish(key: str, status: str, result: Mapping[str, Any], error: str) -> None:
        field = SideEffect._meta.get_field
        done = LedgerStatus.DONE
        params = [
            status,
            field("result").get_db_prep_save(dict(result), connection),
            error[:4000],
            timezone.now() if status == done else None,
            key,
            done.value,
        ]
        with connection.cursor() as cursor:
            cursor.execute(_FINISH_SQL.format(table=SideEffect._meta.db_table), params)

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
