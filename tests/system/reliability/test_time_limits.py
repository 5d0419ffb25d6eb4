"""The `cheap` worker of the Procfile enforces the stage tasks' time limits: a hop that runs too long is
stopped, retried once at most and dead-lettered with its reason — never a stalled worker. Here the
soft limit is a millisecond, so every hop runs too long; with a pool that ignores time limits (solo,
threads) every ticket would resolve instead."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tooling.system import System

pytestmark = pytest.mark.reliability

TERMINAL = {"resolved", "awaiting_review", "dead_lettered"}


def test_the_cheap_worker_stops_a_hop_that_runs_too_long_and_dead_letters_it_with_the_reason() -> None:
    var = Path(tempfile.mkdtemp(prefix="limits-", dir="/tmp"))
    env = {
        "PIPELINE_STAGE_SOFT_TIME_LIMIT_SECONDS": "0.001",
        "PIPELINE_STAGE_TIME_LIMIT_SECONDS": "10",
        "PIPELINE_MAX_ATTEMPTS": "2",
        "PIPELINE_STUCK_AFTER_SECONDS": "3",
    }
    system = System(var, env=env)
    try:
        system.start()
        client = system.client_create("limits", callbacks=False)
        headers = {"Authorization": f"Bearer {client.token}"}
        ids = []
        for i in range(3):
            body = {"body": "My card still hasn't arrived", "customer_ref": f"c{i}"}
            response = httpx.post(f"{system.api_url}/api/v1/tickets/", json=body, headers=headers, timeout=10)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rows = system.sql("SELECT id::text, status FROM tickets_ticket WHERE id::text = ANY(%s)", ids)
            if len(rows) == 3 and all(status in TERMINAL for _, status in rows):
                break
            time.sleep(0.5)
        assert {status for _, status in rows} == {"dead_lettered"}, rows
        errors = system.sql("SELECT last_error FROM agents_deadletter WHERE ticket_id::text = ANY(%s)", ids)
        assert len(errors) == 3
        assert all("time limit" in error or "never finished" in error for (error,) in errors), errors
    finally:
        system.stop()
        shutil.rmtree(var, ignore_errors=True)
