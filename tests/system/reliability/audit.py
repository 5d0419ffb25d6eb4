"""After a fault: is every accepted ticket terminal, was anything done twice, how long to recover."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.system.reliability.load import KINDS, Load
from tooling.system import ApiClient, System

TERMINAL = ("resolved", "awaiting_review", "dead_lettered")


def knob(name: str, default: float) -> float:
    """A RELIABILITY_<NAME> environment variable, for longer runs than CI's."""
    return float(os.environ.get(f"RELIABILITY_{name}", default))


@dataclass
class Row:
    """One line of the fault table, and the evidence behind it."""

    fault: str
    tickets: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: float = 0.0
    # From the same moment until the last of those tickets was terminal; for a fault counted from its
    # start, also the longest a ticket that arrived during it took to be terminal.
    terminal_s: float = 0.0
    dead_letters: int = 0
    wrong_dead_letters: int = 0
    misrouted: int = 0
    resent: int = 0
    callbacks_missing: int = 0
    given_up: int = 0
    refused: int = 0
    api_errors: int = 0
    note: str = ""
    answers: dict[str, int] = field(default_factory=dict)  # what the API answered the load, by code
    unanswered: list[tuple[float, str]] = field(default_factory=list)  # dropped, timed out, no Retry-After
    problems: list[str] = field(default_factory=list)


def _tickets(system: System, client: ApiClient) -> dict[str, dict[str, Any]]:
    rows = system.sql(
        "SELECT id::text, status, created_at, updated_at, intent FROM tickets_ticket WHERE client_id = %s", client.id
    )
    return {
        r[0]: {"status": r[1], "created": r[2].timestamp(), "updated": r[3].timestamp(), "intent": r[4]} for r in rows
    }


def _settled(system: System, client: ApiClient, load: Load) -> bool:
    tickets = _tickets(system, client)
    if set(load.accepted) - set(tickets) or any(t["status"] not in TERMINAL for t in tickets.values()):
        return False
    called = {r.body.get("ticket", {}).get("id") for r in system.callbacks.snapshot() if r.applied}
    return set(tickets) <= called


def drain(system: System, client: ApiClient, load: Load, timeout: float) -> float:
    """Wait until every ticket is terminal and told back; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout and not _settled(system, client, load):
        time.sleep(0.25)
    return time.monotonic() - start


def _duplicates(system: System, client: ApiClient, ids: set[str]) -> list[str]:
    problems = []
    for ticket_id, n in system.sql(
        "SELECT s.ticket_id::text, count(*) FROM agents_sideeffect s JOIN tickets_ticket t ON t.id = s.ticket_id"
        " WHERE t.client_id = %s AND s.tool = 'reply' AND s.idempotency_key LIKE '%%:final:%%'"
        " GROUP BY s.ticket_id HAVING count(*) > 1",
        client.id,
    ):
        problems.append(f"ticket {ticket_id}: {n} final replies in the ledger")
    keys_per_effect: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in system.downstream.snapshot():
        if r.body.get("ticket_id") in ids:
            keys_per_effect[(r.body["ticket_id"], f"downstream {r.path}")].add(r.key)
    events_per_ticket: dict[str, set[str]] = defaultdict(set)
    for r in system.callbacks.snapshot():
        ticket_id = r.body.get("ticket", {}).get("id")
        if ticket_id in ids:
            keys_per_effect[(ticket_id, "callback")].add(r.key)
            events_per_ticket[ticket_id].add(r.body.get("event", ""))
    for (ticket_id, what), keys in keys_per_effect.items():
        if len(keys) > 1:
            problems.append(f"ticket {ticket_id}: {what} sent under {len(keys)} different keys")
    for ticket_id, events in events_per_ticket.items():
        if len(events) > 1:
            problems.append(f"ticket {ticket_id}: told two outcomes {sorted(events)}")
    return problems


def _dead_letters(system: System, client: ApiClient, kinds: dict[str, str], allowed: frozenset[str]) -> list[str]:
    wrong = []
    for ticket_id, stage, reason, error in system.sql(
        "SELECT d.ticket_id::text, d.stage, d.reason, d.last_error FROM agents_deadletter d"
        " JOIN tickets_ticket t ON t.id = d.ticket_id WHERE t.client_id = %s",
        client.id,
    ):
        # The refusal is what truly failed. (Its reason should read "permanent error"; until
        # execute passes `permanent` on it reads "out of retries": see test_reliability_regressions.py.)
        truly_failed = kinds.get(ticket_id) == "refused" and "422" in error
        if not (truly_failed or kinds.get(ticket_id) in allowed) or not reason:
            wrong.append(
                f"ticket {ticket_id} ({kinds.get(ticket_id)}) dead-lettered at {stage}: {reason}: {error[:200]}"
            )
    return wrong


def audit(
    system: System,
    client: ApiClient,
    load: Load,
    *,
    fault: str,
    restored_at: float,
    dead_letter_kinds: set[str] = frozenset(),
    window_end: float | None = None,
) -> Row:
    """The row for one fault; `problems` lists every ticket that breaks a promise, and why."""
    tickets = _tickets(system, client)
    kinds = {tid: sub.kind for tid, sub in load.accepted.items()}
    row = Row(fault=fault, tickets=len(tickets), given_up=len(load.given_up), refused=len(load.refused))
    row.api_errors = sum(n for what, n in load.answers.items() if not what.startswith("2"))
    row.answers = dict(load.answers)
    row.unanswered = list(load.unanswered)
    missing = set(load.accepted) - set(tickets)
    stuck = {tid for tid, t in tickets.items() if t["status"] not in TERMINAL}
    row.lost = len(missing | stuck)
    row.problems += [f"accepted ticket {tid} is not in Postgres" for tid in missing]
    row.problems += [f"ticket {tid} ({kinds.get(tid)}) still {tickets[tid]['status']}" for tid in stuck]
    row.problems += [f"a valid request was refused: {text}" for text in load.refused]
    dupes = _duplicates(system, client, set(tickets))
    row.duplicated, row.problems = len(dupes), row.problems + dupes
    ids = set(tickets)
    row.resent = sum(
        1
        for rec in (system.downstream, system.callbacks)
        for r in _repeats(rec.snapshot())
        if (r.body.get("ticket_id") or r.body.get("ticket", {}).get("id")) in ids
    )
    wrong = _dead_letters(system, client, kinds, dead_letter_kinds)
    row.wrong_dead_letters, row.problems = len(wrong), row.problems + wrong
    row.dead_letters = sum(1 for t in tickets.values() if t["status"] == "dead_lettered")
    misrouted = [
        f"ticket {tid} ({kinds[tid]}) is {t['status']}, expected one of {KINDS[kinds[tid]][1]}"
        for tid, t in tickets.items()
        if tid in kinds and t["status"] in TERMINAL and t["status"] not in KINDS[kinds[tid]][1]
    ]
    row.misrouted, row.problems = len(misrouted), row.problems + misrouted
    told = {}
    for r in system.callbacks.snapshot():
        tid = r.body.get("ticket", {}).get("id")
        if r.applied and tid in ids:
            told[tid] = r.at
    untold = [tid for tid, t in tickets.items() if t["status"] in TERMINAL and tid not in told]
    row.callbacks_missing = len(untold)
    row.problems += [f"ticket {tid} is {tickets[tid]['status']} but its callback never arrived" for tid in untold]
    # Recovery: from the end of the fault until everything the client had sent by then — including
    # requests refused during the outage and accepted on a retry — is terminal and told back.
    sent_before = {tid for tid, sub in load.accepted.items() if sub.first_try <= restored_at}
    before = [tid for tid, t in tickets.items() if t["created"] <= restored_at or tid in sent_before]
    done_at = [max(tickets[tid]["updated"], told.get(tid, 0.0)) for tid in before]
    row.recovery_s = round(max([0.0, *(t - restored_at for t in done_at)]), 1)
    waits = [tickets[tid]["updated"] - restored_at for tid in before]
    if window_end is not None:
        # A fault counted from its start (a worker killed or frozen): a ticket that arrived while it
        # lasted counts from its arrival — the one whose message went to the frozen worker's socket.
        waits += [t["updated"] - t["created"] for t in tickets.values() if restored_at < t["created"] <= window_end]
    row.terminal_s = round(max([0.0, *waits]), 1)
    return row


def _repeats(receipts: list[Any]) -> list[Any]:
    """Receipts of a key that had already been applied: a call re-sent after it took effect."""
    applied: set[str] = set()
    out = []
    for r in receipts:
        if r.key in applied:
            out.append(r)
        if r.applied:
            applied.add(r.key)
    return out


ROWS: list[Row] = []  # filled by the fault suite, printed at the end of the session


def record(rows: list[Row]) -> None:
    """Append the table to RELIABILITY_RESULTS (a file), when set: the figures of a run, kept."""
    path = os.environ.get("RELIABILITY_RESULTS")
    if path and rows:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"\n<!-- {time.strftime('%Y-%m-%d %H:%M:%S')} -->\n{table(rows)}\n")
            fh.writelines(f"- {row.fault}: {row.note}\n" for row in rows)


def table(rows: list[Row]) -> str:
    """The fault table, as Markdown."""
    head = "| fault | tickets | lost | duplicated | recovery s | terminal s | dead letters (all truly failed) | same-key re-sends | callbacks missing | API errors retried | API unanswered |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r.fault} | {r.tickets} | {r.lost} | {r.duplicated} | {r.recovery_s:.1f} | {r.terminal_s:.1f} | "
            f"{r.dead_letters} ({'yes' if not r.wrong_dead_letters else f'NO: {r.wrong_dead_letters} wrong'}) | "
            f"{r.resent} | {r.callbacks_missing} | {r.api_errors} | {len(r.unanswered)} |"
        )
    return "\n".join(lines)
