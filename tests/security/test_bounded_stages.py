"""Stages on thread pools (execute, the Claude calls) end by a deadline of their own, and a downstream call holds no
transaction or row lock: the ledger records `started` in one statement, calls, records the outcome
in another, and still never calls twice for a key that is done."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from agents.models import LedgerStatus, SideEffect
from agents.tools import LedgerTools
from tests.factories import client_with_token, ticket_make


class Downstream:
    """A downstream API on 127.0.0.1: records each call with what another connection saw of the
    ledger row meanwhile (its status, attempts, and whether it could lock it); can hold its answer."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.release.set()
        self.hold_seconds = 5.0
        downstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers["Idempotency-Key"]
                downstream.calls.append({"key": key, **downstream.ledger_seen(key)})
                downstream.release.wait(downstream.hold_seconds)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def ledger_seen(key: str) -> dict[str, Any]:
        """From this thread's own connection (Django's are per thread), while the call is in flight."""
        seen: dict[str, Any] = {}
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f'SELECT "status", "attempts" FROM "{SideEffect._meta.db_table}" '
                    'WHERE "idempotency_key" = %s FOR UPDATE NOWAIT',
                    [key],
                )
                seen["status"], seen["attempts"] = cursor.fetchone()
                seen["locked"] = False
        except OperationalError:
            seen["locked"] = True
        finally:
            connection.close()
        return seen

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    server = Downstream()
    yield server
    server.close()


@pytest.fixture
def ticket(transactional_db):
    client, _ = client_with_token()
    return ticket_make(client)


def _webhook(tools: LedgerTools, url: str, key: str = "t:final:0:webhook"):
    return tools.run("webhook", {"url": url, "amount": 5}, idempotency_key=key)


def test_a_downstream_call_holds_no_lock_and_its_start_is_committed_before_it(ticket, downstream):
    result = _webhook(LedgerTools(str(ticket.id)), downstream.url)

    assert result.ok
    (call,) = downstream.calls
    assert call == {"key": "t:final:0:webhook", "status": LedgerStatus.STARTED, "attempts": 1, "locked": False}
    row = SideEffect.objects.get(idempotency_key="t:final:0:webhook")
    assert (row.status, row.attempts, row.finished_at is not None) == (LedgerStatus.DONE, 1, True)


def test_a_redelivery_never_calls_again_for_a_key_that_is_done(ticket, downstream):
    first = _webhook(LedgerTools(str(ticket.id)), downstream.url)
    again = _webhook(LedgerTools(str(ticket.id)), downstream.url)

    assert first.ok and again.ok and again.replayed and again.data == first.data
    assert len(downstream.calls) == 1


def test_a_started_call_whose_outcome_is_unknown_is_sent_again_with_the_same_key(ticket, downstream):
    # The worker died mid-call: the row says started, one attempt, no outcome.
    SideEffect.objects.create(
        ticket=ticket, idempotency_key="t:final:0:webhook", tool="webhook", status=LedgerStatus.STARTED, attempts=1
    )

    result = _webhook(LedgerTools(str(ticket.id)), downstream.url)

    assert result.ok
    assert [c["key"] for c in downstream.calls] == ["t:final:0:webhook"]  # the downstream dedupes by it
    assert SideEffect.objects.get(idempotency_key="t:final:0:webhook").attempts == 2


def test_a_call_is_cut_at_the_stages_budget_as_a_temporary_failure(ticket, downstream, settings):
    settings.PIPELINE = {**settings.PIPELINE, "WEBHOOK_TIMEOUT_SECONDS": 30.0}
    downstream.release.clear()  # the downstream answers only after the test lets it (or 5 s)
    try:
        result = _webhook(LedgerTools(str(ticket.id), budget=0.5), downstream.url)
    finally:
        downstream.release.set()

    assert not result.ok and not result.data["permanent"]
    assert "Timeout" in result.data["error"]
    row = SideEffect.objects.get(idempotency_key="t:final:0:webhook")
    assert row.status == LedgerStatus.FAILED  # the stage retries it, or dead-letters it out of retries


def test_a_stage_past_its_budget_starts_no_call(ticket, downstream):
    result = _webhook(LedgerTools(str(ticket.id), budget=0), downstream.url)

    assert not result.ok and not result.data["permanent"] and "budget" in result.data["error"]
    assert downstream.calls == []


MESSAGE = (
    b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","stop_reason":"end_turn",'
    b'"stop_sequence":null,"content":[{"type":"text","text":"{}"}],"usage":{"input_tokens":5,"output_tokens":2}}'
)


class Trickle:
    """A Messages API that sends its (valid) answer a few bytes at a time, each read well within a
    per-read timeout, the whole far past the call's deadline: until the test stops it."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        trickle = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(MESSAGE)))
                self.end_headers()
                try:
                    for i in range(0, len(MESSAGE), 4):
                        if trickle.stop.wait(0.2):
                            return
                        self.wfile.write(MESSAGE[i : i + 4])
                        self.wfile.flush()
                except OSError:
                    return  # the client gave up

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_model_call_whose_answer_trickles_ends_by_its_deadline_as_a_retryable_error(settings):
    from agents.llm.anthropic_client import AnthropicClient
    from agents.llm.base import ModelError, ModelRequest
    from agents.llm.store import redis_client

    trickle = Trickle()
    unlimited = {"rpm": 60_000, "itpm": 100_000_000, "otpm": 100_000_000}
    settings.ANTHROPIC_API_KEY, settings.ANTHROPIC_BASE_URL = "test", trickle.url
    settings.LLM = {"KEY_PREFIX": "bounded-test:", "LIMITS": {"small": unlimited}, "TIMEOUT_SECONDS": 1.0}
    request = ModelRequest(
        model_class="small",
        model="claude-haiku-4-5",
        system="",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
    )
    try:
        with pytest.raises(ModelError) as failed:  # the whole answer takes about 11 s, 0.2 s a read
            AnthropicClient().complete(request)
    finally:
        trickle.close()
        limiter_keys = redis_client()
        for name in limiter_keys.scan_iter(match="bounded-test:*", count=1000):
            limiter_keys.delete(name)

    assert not failed.value.permanent and "Timeout" in str(failed.value)
