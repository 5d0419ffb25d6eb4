"""Every read and write of a ticket and its traces that the runner makes, behind named functions.

The hot path's statements are SQL written once: the ORM spent more CPU building them than Postgres
spends answering them (docs/performance.md). Each stays in step with the models it names: columns
come from the models' `_meta`, never typed twice.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.db import connection
from django.utils import timezone

from agents.models import DeadLetter, Trace
from agents.pipeline.spec import SPEC
from tickets.models import Status, Ticket

_TICKET = Ticket._meta.db_table
# Whether an older request of the same customer is in flight, and the customer's last interactions.
_RECENT_SQL = (
    f'SELECT "created_at", "status", "intent", left("reply", 200), EXISTS ('
    f'SELECT 1 FROM "{_TICKET}" o WHERE o."client_id" = %s AND o."customer_ref" = %s AND o."created_at" < %s '
    f'AND o."status" = ANY(%s)) FROM "{_TICKET}" WHERE "client_id" = %s AND "customer_ref" = %s '
    f'AND "created_at" < %s ORDER BY "created_at" DESC LIMIT %s'
)


def customer_recent(ticket: Ticket, limit: int) -> tuple[bool, list[dict[str, Any]]]:
    """Whether an older request of the same customer is still in flight, and the customer's last
    interactions (compact, never the whole transcript) — one round trip for both (the index
    `ticket_customer`; no older row at all means nothing older is in flight either)."""
    if not ticket.customer_ref:
        return False, []
    who = [ticket.client_id, ticket.customer_ref, ticket.created_at]
    with connection.cursor() as cursor:
        cursor.execute(_RECENT_SQL, [*who, list(SPEC.by_status), *who, max(limit, 1)])
        rows = cursor.fetchall()
    history = [
        {"at": at.isoformat(), "status": status, "intent": intent, "reply": reply}
        for at, status, intent, reply, _ in rows[:limit]
    ]
    return bool(rows and rows[0][4]), history


_LOAD_FIELDS = Ticket._meta.concrete_fields
_LOAD_COLUMNS = ", ".join(f'"{field.column}"' for field in _LOAD_FIELDS)
_LOAD_SQL = f'SELECT {_LOAD_COLUMNS} FROM "{_TICKET}" WHERE "id" = %s'
_LOAD_ATTNAMES = [f.attname for f in _LOAD_FIELDS]
_LOAD_CONVERTERS = [(i, f) for i, f in enumerate(_LOAD_FIELDS) if hasattr(f, "from_db_value")]


def ticket_load(ticket_id: str) -> Ticket | None:
    """The ticket as the ORM would load it, or None (also for an id that is not a UUID)."""
    try:
        pk = uuid.UUID(str(ticket_id))
    except ValueError:
        return None
    with connection.cursor() as cursor:
        cursor.execute(_LOAD_SQL, [pk])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for i, field in _LOAD_CONVERTERS:
        values[i] = field.from_db_value(values[i], None, connection)
    return Ticket.from_db(connection.alias, _LOAD_ATTNAMES, values)


def ticket_touch(ticket_id: Any, status: str, attempts: int) -> bool:
    """Mark the row alive for the sweeper (`updated_at`) if it still holds `status` and `attempts`."""
    alive = Ticket.objects.filter(pk=ticket_id, status=status, stage_attempts=attempts)
    return alive.update(updated_at=timezone.now()) == 1


def attempt_failed(ticket_id: Any, status: str, attempts: int, *, attempt: int, final: bool) -> bool:
    """Count a failed attempt (and dead-letter the ticket when `final`) if the row still holds
    `status` and `attempts`; False when another delivery moved it first."""
    now = timezone.now()
    moved = Ticket.objects.filter(pk=ticket_id, status=status, stage_attempts=attempts).update(
        stage_attempts=attempt,
        updated_at=now,
        **({"status": Status.DEAD_LETTERED, "callback_due_at": now} if final else {}),
    )
    return moved == 1


def trace_create(**fields: Any) -> Trace:
    """One trace row, written now."""
    return Trace.objects.create(finished_at=timezone.now(), **fields)


def dead_letter_create(*, ticket_id: Any, stage: str, reason: str, error: dict[str, str], attempts: int) -> None:
    """The record of a ticket that ran out of attempts (or failed for good) at `stage`."""
    DeadLetter.objects.create(
        ticket_id=ticket_id,
        stage=stage,
        reason=reason,
        error_class=error["error_class"],
        last_error=error["error_message"],
        attempts=attempts,
    )


# --- the write of a hop: one statement --------------------------------------------------------------
# The conditional update of the ticket and the insert of its trace rows go to Postgres as one
# statement (a data-modifying CTE): the traces are written only if the update matched, in the same
# transaction by construction, in one round trip and without the ORM building queries per stage.
# The trace rows go as one JSON parameter (`jsonb_to_recordset`): the statement is the same for any
# number of stages, short, with few parameters, so psycopg keeps its parsed form and Postgres its
# plan, and one `json.dumps` replaces Django's conversion of every value.
_TRACE_FIELDS = [f for f in Trace._meta.concrete_fields if not f.primary_key and f.attname != "ticket_id"]
_TRACE_OUTPUT_ENCODER = Trace._meta.get_field("output").encoder


@lru_cache(maxsize=64)
def _move_sql(names: tuple[str, ...]) -> str:
    def cast(field: Any) -> str:
        return f"CAST(%s AS {field.db_type(connection)})"

    ticket_fields = [Ticket._meta.get_field(name) for name in names]
    sets = ", ".join(f'"{f.column}" = {cast(f)}' for f in ticket_fields)
    cost = Ticket._meta.get_field("cost_usd")
    columns = ", ".join(f'"{f.column}"' for f in _TRACE_FIELDS)
    record = ", ".join(f'"{f.column}" {f.db_type(connection)}' for f in _TRACE_FIELDS)
    values = ", ".join(f'v."{f.column}"' for f in _TRACE_FIELDS)
    return (
        f'WITH moved AS (UPDATE "{_TICKET}" SET {sets}, "{cost.column}" = "{cost.column}" + {cast(cost)} '
        f'WHERE "id" = %s AND "status" = %s AND "stage_attempts" = %s RETURNING "id") '
        f'INSERT INTO "{Trace._meta.db_table}" ("ticket_id", {columns}) '
        f'SELECT moved."id", {values} '
        f"FROM moved CROSS JOIN ROWS FROM (jsonb_to_recordset(CAST(%s AS jsonb)) AS ({record})) "
        f"WITH ORDINALITY AS v({columns}, n) "
        f'ORDER BY v.n RETURNING "id"'
    )


def _json_value(value: Any) -> Any:
    # Django's JSON encoder would cut timestamps to milliseconds; traces keep them exact.
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def ticket_move_and_trace(
    ticket: Ticket, status: str, attempts: int, changes: dict[str, Any], cost: Decimal, traces: list[Trace]
) -> bool:
    """Move the ticket if its row still holds `status` and `attempts`, and write the traces; False
    when another delivery got there first (nothing written)."""
    names = tuple(changes)
    params = [Ticket._meta.get_field(n).get_db_prep_save(changes[n], connection) for n in names]
    params.append(Ticket._meta.get_field("cost_usd").get_db_prep_save(cost, connection))
    params += [ticket.pk, status, attempts]
    rows = [{f.column: _json_value(getattr(trace, f.attname)) for f in _TRACE_FIELDS} for trace in traces]
    params.append(json.dumps(rows, cls=_TRACE_OUTPUT_ENCODER))
    with connection.cursor() as cursor:
        cursor.execute(_move_sql(names), params)
        ids = cursor.fetchall()
    if not ids:
        return False
    for trace, row in zip(traces, ids, strict=True):
        trace.id, trace._state.adding = row[0], False
    return True
