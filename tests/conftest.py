"""Shared fixtures: API clients, the test intent pack, a real Celery worker, an HTTP recorder."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.intents.catalog import clear_cache
from agents.intents.packs import intent_pack_load
from tests.factories import client_with_token

TEST_PACK = Path(__file__).parent / "data" / "pack.yaml"


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll until `predicate()` is truthy; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(autouse=True)
def callback_hosts_allowed(settings: Any) -> None:
    """Tests' callbacks go to local recorders: let loopback through the outbound guard
    (project/netguard/). example.com is what API tests submit; the test machine has no DNS."""
    settings.CALLBACK_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "example.com")
    settings.DOWNSTREAM_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "example.com")  # the intents' webhooks


@pytest.fixture
def api(db: Any) -> Callable[..., tuple[APIClient, Any]]:
    """Make an authenticated API client: `http, client = api("acme")`."""

    def make(name: str = "acme", **kwargs: Any) -> tuple[APIClient, Any]:
        client, token = client_with_token(name=name, **kwargs)
        http = APIClient()
        http.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return http, client

    return make


@pytest.fixture
def intents(db: Any) -> Iterator[None]:
    """The small test pack, loaded; catalogue caches cleared before and after, and the process's
    classifier tiers rebuilt: the local tier checks the active model every few seconds, so a model
    an earlier test activated (its rows since flushed) could otherwise still classify here."""
    from agents.pipeline.context import parts

    clear_cache()
    parts.reset()
    intent_pack_load(TEST_PACK)
    yield
    clear_cache()
    parts.reset()


@pytest.fixture
def stage_spec() -> Iterator[Any]:
    """The stage spec the runner reads, for a test to swap stages in (a toy stage, a stage that
    fails); the product's stages are back after the test."""
    from agents.pipeline.spec import SPEC, STAGES

    yield SPEC
    SPEC.load(STAGES)


@pytest.fixture(autouse=True)
def callback_breakers_closed(request: Any) -> Iterator[None]:
    """Each test's clients start with closed callback breakers: the breakers' counts live in Redis by
    client id, and a later test's client may get an earlier one's id (tickets/webhooks/breaker.py)."""
    yield
    uses_db = {"db", "transactional_db"} & set(request.fixturenames) or request.node.get_closest_marker("django_db")
    if not uses_db:
        return
    from django.conf import settings

    from project.redisconn import redis_client

    r = redis_client()
    for pattern in ("callbacks:failures:*", "callbacks:hold:*"):
        keys = list(r.scan_iter(f"{settings.BROKER_KEY_PREFIX}{pattern}", count=1000))
        if keys:
            r.delete(*keys)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    """A real Celery worker (thread pool) consuming every queue of the real Redis broker."""
    from celery.contrib.testing.worker import start_worker

    from project.celery import app

    queues = [queue.name for queue in app.conf.task_queues]
    with django_db_blocker.unblock():
        app.control.purge()
        with start_worker(
            app, pool="threads", concurrency=4, perform_ping_check=False, queues=queues, shutdown_timeout=30
        ) as worker:
            yield worker


@pytest.fixture
def pipeline(transactional_db: Any, celery_worker: Any, intents: None, settings: Any) -> Iterator[Any]:
    """Everything a pipeline test needs: committed data, the worker, the pack, fast backoff."""
    from project.celery import app

    settings.PIPELINE = {**settings.PIPELINE, "BACKOFF_BASE_SECONDS": 0.05, "BACKOFF_CAP_SECONDS": 0.2}
    app.control.purge()
    yield celery_worker
    app.control.purge()


class Recorder:
    """A local HTTP endpoint that records what it receives and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # consumed one per request; 200 once empty
        self.delay = 0.0  # seconds before each answer (a slow endpoint)
        self.in_flight = self.most_at_once = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder.lock:
                    recorder.in_flight += 1
                    recorder.most_at_once = max(recorder.most_at_once, recorder.in_flight)
                time.sleep(recorder.delay)
                with recorder.lock:
                    recorder.in_flight -= 1
                with recorder.lock:
                    status = recorder.statuses.pop(0) if recorder.statuses else 200
                    recorder.requests.append({"headers": dict(self.headers), "body": body, "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def json_bodies(self) -> list[Any]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verified(secret: str, request: dict[str, Any]) -> bool:
    """Whether a recorded callback verifies under `secret` with the Standard Webhooks library, as a
    client's receiver would verify it."""
    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    try:
        Webhook(secret).verify(request["body"], request["headers"])
    except WebhookVerificationError:
        return False
    return True


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture
def recorder_factory() -> Iterator[Callable[[], Recorder]]:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    yield make
    for rec in made:
        rec.close()
