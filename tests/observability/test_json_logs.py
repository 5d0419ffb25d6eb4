"""Structured logs: JSON lines with the ticket, client, stage and attempt; sensitive spans masked;
one line per stage attempt."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils.module_loading import import_string

from agents import metrics
from agents.models import Trace
from project.logging import QUIET_LOGGERS, ContextFilter, JsonFormatter, MaskingFormatter, bind, clear, logging_config
from tests.conftest import wait_for
from tests.factories import ticket_payload
from tickets.models import Status, Ticket

metrics.connect()

CARD, EMAIL = "4111 1111 1111 1111", "alice@example.com"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Capture the root logger as the product's LOGGING would (JSON, chatter quietened)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in [*QUIET_LOGGERS, "agents.stage"]}
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("agents.stage").setLevel(logging.INFO)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    clear()


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_line_is_json_with_the_bound_context_and_sensitive_spans_masked(json_lines):
    bind(ticket_id="t-1", client_id=7, stage="parse", attempt=2)
    log = logging.getLogger("tests.observability")

    log.info("customer wrote: card %s, mail %s", CARD, EMAIL, extra={"note": f"call +44 20 7946 0958 or {EMAIL}"})
    try:
        raise ValueError(f"bad card {CARD}")
    except ValueError:
        log.exception("stage failed")

    first, second = records(json_lines)
    assert first["ticket_id"] == "t-1" and first["client_id"] == 7 and first["stage"] == "parse"
    assert first["attempt"] == 2 and first["level"] == "INFO" and first["logger"] == "tests.observability"
    assert first["msg"] == "customer wrote: card [CARD_NUMBER], mail [EMAIL]"
    assert first["note"] == "call [PHONE] or [EMAIL]"
    assert "ValueError: bad card [CARD_NUMBER]" in second["exc"]
    assert CARD not in json_lines.getvalue() and EMAIL not in json_lines.getvalue()


def test_lines_outside_a_ticket_still_carry_the_four_fields_empty(json_lines):
    logging.getLogger("tests.observability").warning("beat woke up")

    (line,) = records(json_lines)
    assert {k: line[k] for k in ("ticket_id", "client_id", "stage", "attempt")} == dict.fromkeys(
        ("ticket_id", "client_id", "stage", "attempt")
    )


def test_the_plain_formatter_masks_too():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "mail %s", (EMAIL,), None)
    assert MaskingFormatter("%(message)s [%(ticket_id)s]").format(record) == "mail [EMAIL] [None]"


def test_the_logging_dict_configures_json_lines_on_the_root_logger():
    config = logging_config(level="WARNING")
    assert config["root"] == {"handlers": ["console"], "level": "WARNING"}
    assert config["handlers"]["console"]["formatter"] == "json"
    assert config["loggers"]["celery.app.trace"] == {"level": "WARNING"}
    factories = [config["filters"]["context"]["()"], *(f["()"] for f in config["formatters"].values())]
    assert [type(import_string(path)()).__name__ for path in factories] == [
        "ContextFilter",
        "JsonFormatter",
        "MaskingFormatter",
    ]


@pytest.mark.pipeline
def test_a_pipeline_run_logs_one_line_per_stage_attempt_and_no_customer_data(pipeline, api, json_lines):
    http, client = api()
    body = f"My card still hasn't arrived. Old card {CARD}, write to {EMAIL}"
    response = http.post("/api/v1/tickets/", ticket_payload(body=body), format="json")
    ticket_id = response.json()["id"]
    wait_for(lambda: Ticket.objects.get(pk=ticket_id).status == Status.RESOLVED, what="the ticket resolved")
    n_traces = Trace.objects.filter(ticket_id=ticket_id).count()

    def lines() -> list[dict[str, Any]] | None:
        mine = [r for r in records(json_lines) if r["ticket_id"] == ticket_id]
        return mine if len([r for r in mine if r["logger"] == "agents.stage"]) == n_traces else None

    mine = wait_for(lines, what="a line for every stage attempt")

    assert len(mine) == n_traces == 4  # one line per stage attempt, nothing per step
    assert [r["stage"] for r in mine] == ["parse", "classify", "decide", "execute"]
    assert all(r["client_id"] == client.id and r["attempt"] == 1 and r["outcome"] == "ok" for r in mine)
    assert mine[1]["tier"] == "rules" and mine[1]["confidence"] >= 0.9 and mine[-1]["new_status"] == "resolved"
    assert CARD not in json_lines.getvalue() and EMAIL not in json_lines.getvalue()
