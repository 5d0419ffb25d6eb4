"""Health endpoints, the workers' heartbeat and registry, and queue depth on either broker.

Run against Redis (the default) and RabbitMQ (`TEST_BROKER_URL=amqp://...`; .ci/run does both).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from kombu import Queue

from project import health, heartbeat
from project.metrics import PipelineStateCollector, queue_depths
from tests.conftest import wait_for


@pytest.fixture
def http() -> Client:
    return Client()


def test_healthz_answers_without_touching_anything(http):
    response = http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_ok_when_postgres_the_broker_and_the_migrations_are(http, db):
    health._migrated.clear()
    response = http.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == ["broker", "migrations", "postgres"]


def test_readyz_is_503_naming_the_broker_when_the_broker_does_not_answer(http, db, settings):
    url = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = (
        "redis://127.0.0.1:1/0" if url.startswith("redis") else "amqp://guest:guest@127.0.0.1:1//"
    )
    response = http.get("/readyz")
    assert response.status_code == 503
    assert set(response.json()["failed"]) == {"broker"}


def test_readyz_without_the_broker_stays_ready_through_a_broker_outage(http, db, settings):
    health._migrated.clear()
    url = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = (
        "redis://127.0.0.1:1/0" if url.startswith("redis") else "amqp://guest:guest@127.0.0.1:1//"
    )
    response = http.get("/readyz?skip=broker")
    assert response.status_code == 200, response.content
    assert response.json()["checks"] == ["migrations", "postgres"]


def test_readyz_is_503_while_a_migration_is_not_applied(http, db):
    health._migrated.clear()
    MigrationRecorder.Migration.objects.filter(app="tickets").order_by("-id").first().delete()
    response = http.get("/readyz")
    assert response.status_code == 503
    assert "migration(s) not applied" in response.json()["failed"]["migrations"]
    health._migrated.clear()


def test_a_running_worker_touches_its_heartbeat_file_and_is_counted_per_queue(pipeline, tmp_path, monkeypatch):
    beat = tmp_path / "alive"
    monkeypatch.setenv("WORKER_HEARTBEAT_FILE", str(beat))
    wait_for(beat.exists, timeout=heartbeat.HEARTBEAT_SECONDS * 3, what="the heartbeat file")
    first = beat.stat().st_mtime
    wait_for(lambda: beat.stat().st_mtime > first, timeout=heartbeat.HEARTBEAT_SECONDS * 3, what="a second heartbeat")

    live = heartbeat.live_workers()
    assert pipeline.hostname in live
    assert {"parse", "execute", "webhooks", "maintenance"} <= set(live[pipeline.hostname]["queues"])
    samples = {
        (m.name, s.labels.get("queue")): s.value for m in PipelineStateCollector(0)._workers() for s in m.samples
    }
    assert samples[("pipeline_queue_workers", "parse")] >= 1
    held = sum(int(r.get("in_flight", {}).get("parse", 0)) for r in heartbeat.live_workers().values())
    assert samples[("pipeline_queue_in_flight", "parse")] == held


def test_a_worker_that_stopped_beating_is_no_longer_counted(db):
    key = heartbeat._registry_key()
    name = f"gone@{uuid.uuid4().hex[:6]}"
    record = {"at": time.time() - heartbeat.HEARTBEAT_STALE_SECONDS - 1, "queues": ["parse"], "in_flight": {"parse": 3}}
    heartbeat._redis().hset(key, name, json.dumps(record))
    assert name not in heartbeat.live_workers()
    assert not heartbeat._redis().hexists(key, name)  # the stale record is removed


def test_in_flight_is_counted_by_queue_whatever_delay_prefix_rabbitmq_added():
    delayed = "0." * 27 + "1.execute"
    assert heartbeat._queue_of({"routing_key": delayed}) == "execute"
    assert heartbeat._queue_of({"routing_key": "parse"}) == "parse"


def test_queue_depth_counts_waiting_messages_on_this_broker_and_a_missing_queue_is_empty(db):
    from project.celery import app

    probe, missing = f"depth_probe_{uuid.uuid4().hex[:6]}", f"never_declared_{uuid.uuid4().hex[:6]}"
    with app.connection_for_write() as conn:
        producer = conn.Producer()
        for _ in range(3):
            producer.publish({"noop": True}, routing_key=probe, declare=[Queue(probe)])
    try:
        depths = wait_for(lambda: (d := queue_depths([missing, probe, "parse"])[0])[probe] == 3 and d, what="depth")
        assert depths[missing] == 0
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(probe)


def test_a_countdown_under_a_second_routes_through_rabbitmqs_delay_exchanges_undelayed():
    from celery.app import base
    from kombu.transport import native_delayed_delivery as ndd

    assert base.calculate_routing_key(0, "parse") == "0." * 28 + "parse"
    assert base.calculate_routing_key(0, "0." * 27 + "1.parse") == "0." * 28 + "parse"
    assert base.calculate_routing_key(3, "parse") == ndd.calculate_routing_key(3, "parse")


def test_probes_and_the_scrape_answer_a_pods_ip_that_allowed_hosts_does_not_name(http, db, settings):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    health._migrated.clear()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert http.get(path, HTTP_HOST="10.244.1.7:8000").status_code == 200, path
    assert http.get("/api/schema/", HTTP_HOST="10.244.1.7:8000").status_code == 400  # the rest still checks


def test_answering_before_the_host_check_keeps_the_metrics_guard(http, db, settings):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    settings.METRICS_ALLOWED_CIDRS, settings.METRICS_TOKEN = ["10.244.0.0/16"], "scrape-token"
    pod = {"HTTP_HOST": "10.244.1.7:8000"}
    assert http.get("/metrics", REMOTE_ADDR="203.0.113.9", **pod).status_code == 403
    assert http.get("/metrics", REMOTE_ADDR="10.244.3.4", **pod).status_code == 200
    bearer = {"HTTP_AUTHORIZATION": "Bearer scrape-token"}
    assert http.get("/metrics", REMOTE_ADDR="203.0.113.9", **pod, **bearer).status_code == 200
