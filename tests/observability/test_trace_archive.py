"""Trace retention: archive old traces to JSONL.gz, delete them, lose nothing, keep the ticket."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents import retention
from agents.models import Trace
from agents.obs_tasks import archive_traces
from agents.retention import FIELDS, LocalArchiveStorage, archived_traces, traces_archive, traces_restore
from tests.factories import client_with_token, ticket_make
from tickets.models import Status, Ticket

SUMMARY = ("status", "intent", "confidence", "action", "reply", "cost_usd", "resolved_at", "created_at", "context")


def make_traces(ticket: Ticket, n: int, *, days_ago: float) -> None:
    base = timezone.now() - timedelta(days=days_ago)
    for i in range(n):
        started = base + timedelta(seconds=i, microseconds=i * 7)
        Trace.objects.create(
            ticket=ticket,
            stage=["parse", "classify", "decide", "execute"][i % 4],
            attempt=1 + i % 2,
            status="ok" if i % 3 else "retry",
            started_at=started,
            finished_at=started + timedelta(milliseconds=3),
            duration_ms=3.141592653589793 + i,
            confidence=None if i % 4 else 0.9375,
            tier="rules" if i % 4 == 1 else "",
            model="claude-haiku" if i % 5 == 0 else "",
            input_tokens=i * 11,
            output_tokens=i * 3,
            cost_usd=Decimal("0.000123") * i,
            cache_hit=i % 2 == 0,
            error_class="" if i % 3 else "x.Transient",
            error_message="" if i % 3 else f"boom {i} — ünïcode",
            output={"i": i, "nested": {"list": [1, "two", None]}},
        )


@pytest.fixture
def tickets(db: Any) -> dict[str, Ticket]:
    client, _ = client_with_token()
    resolved = ticket_make(
        client,
        status=Status.RESOLVED,
        intent="card_arrival",
        confidence=0.97,
        action="reply",
        reply="Your card is on its way.",
        cost_usd=Decimal("0.004200"),
        resolved_at=timezone.now(),
        context={"parse": {"masked": "my card [CARD_NUMBER]"}},
    )
    dead = ticket_make(client, status=Status.DEAD_LETTERED, intent="lost_or_stolen_card")
    waiting = ticket_make(client, status=Status.AWAITING_REVIEW)
    make_traces(resolved, 17, days_ago=40)
    make_traces(dead, 9, days_ago=35)
    make_traces(waiting, 4, days_ago=45)  # a person may still need its story: kept
    make_traces(resolved, 3, days_ago=1)  # young: kept
    return {"resolved": resolved, "dead": dead, "waiting": waiting}


def snapshot(qs: Any) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in qs.values(*FIELDS)}


def summaries() -> dict[Any, tuple[Any, ...]]:
    return {t.pk: tuple(getattr(t, f) for f in SUMMARY) for t in Ticket.objects.all()}


def test_old_traces_are_archived_exactly_once_and_deleted_and_young_ones_kept(tickets, tmp_path):
    storage = LocalArchiveStorage(tmp_path)
    cutoff = timezone.now() - timedelta(days=30)
    due = snapshot(Trace.objects.filter(started_at__lt=cutoff, ticket__status__in=["resolved", "dead_lettered"]))
    kept = snapshot(Trace.objects.exclude(id__in=due))
    before = summaries()
    assert len(due) == 26 and len(kept) == 7

    report = traces_archive(older_than=timedelta(days=30), batch_size=10, storage=storage)

    assert report.archived == 26 and report.batches == 3 and len(report.objects) == 3
    archived = list(archived_traces(storage))
    assert Counter(r["id"] for r in archived) == Counter(list(due))  # every due row, exactly once
    assert {r["id"]: r for r in archived} == due  # every field, every type, round-tripped
    assert snapshot(Trace.objects.all()) == kept  # old rows gone, the rest untouched
    assert summaries() == before  # the tickets keep their summary

    again = traces_archive(older_than=timedelta(days=30), batch_size=10, storage=storage)

    assert again.archived == 0 and again.objects == []
    assert Counter(r["id"] for r in archived_traces(storage)) == Counter(list(due))


def test_the_archive_is_gzipped_json_lines_named_by_day(tickets, tmp_path):
    storage = LocalArchiveStorage(tmp_path)
    traces_archive(older_than=timedelta(days=30), batch_size=1000, storage=storage)

    names = storage.names()
    assert len(names) == 1 and names[0].endswith(".jsonl.gz")
    path = Path(tmp_path, names[0])
    assert path.parent.relative_to(tmp_path).as_posix().count("/") == 2  # YYYY/MM/DD
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert len(lines) == 26 and all(json.loads(line)["ticket_id"] for line in lines)
    assert not list(tmp_path.rglob("*.part"))  # no temporary file left behind


class CrashAfterWrite(LocalArchiveStorage):
    """Writes the object, then dies before the rows are deleted (once)."""

    crashed = False

    def write(self, name: str, data: bytes) -> str:
        uri = super().write(name, data)
        if not self.crashed:
            CrashAfterWrite.crashed = True
            raise ConnectionError("worker died after writing the archive")
        return uri


def test_a_crash_between_write_and_delete_loses_nothing_and_duplicates_nothing(tickets, tmp_path):
    due = snapshot(
        Trace.objects.filter(
            started_at__lt=timezone.now() - timedelta(days=30), ticket__status__in=["resolved", "dead_lettered"]
        )
    )
    storage = CrashAfterWrite(tmp_path)

    with pytest.raises(ConnectionError):
        traces_archive(older_than=timedelta(days=30), batch_size=10, storage=storage)
    assert Trace.objects.filter(id__in=due).count() == 26  # nothing deleted
    assert len(storage.names()) == 1  # but the first object was written

    traces_archive(older_than=timedelta(days=30), batch_size=10, storage=storage)

    assert Counter(r["id"] for r in archived_traces(storage)) == Counter(list(due))
    assert not Trace.objects.filter(id__in=due).exists()


def test_archived_traces_can_be_restored_unchanged_and_restoring_twice_adds_nothing(tickets, tmp_path):
    storage = LocalArchiveStorage(tmp_path)
    everything = snapshot(Trace.objects.all())
    traces_archive(older_than=timedelta(days=30), batch_size=8, storage=storage)

    assert traces_restore(storage=storage) == 26
    assert traces_restore(storage=storage) == 0
    assert snapshot(Trace.objects.all()) == everything


def test_the_beat_task_and_the_command_use_the_configured_storage(tickets, tmp_path, settings):
    settings.TRACE_RETENTION = {
        "ARCHIVE_AFTER_DAYS": 30,
        "BATCH_SIZE": 10,
        "STORAGE_OPTIONS": {"location": str(tmp_path / "beat")},
    }
    assert isinstance(retention.archive_storage(), LocalArchiveStorage)

    result = archive_traces.apply(kwargs={"older_than_days": 42}).get()  # only the 45-day-old ones are due...
    assert result["archived"] == 0  # ...and they belong to a ticket still waiting for a person

    call_command("archive_traces", "--older-than-days", "30", "--until-done", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert len(list(archived_traces())) == 26
    assert Trace.objects.count() == 7


def test_an_object_name_cannot_escape_the_archive(tmp_path):
    with pytest.raises(ValueError):
        LocalArchiveStorage(tmp_path / "a").write("../outside.jsonl.gz", b"")


# --- Object storage: the S3 API, against a real S3-compatible server (moto's, over HTTP) ---------


@pytest.fixture(scope="module")
def s3_server() -> Any:
    """moto's S3-compatible server on a free loopback port, for this module's tests."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> dict[str, str]:
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"archive-{request.node.name.replace('_', '-')[:40].lower().strip('-')}"
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    return {"bucket": bucket, "endpoint_url": s3_server, "region_name": "us-east-1"}


def test_traces_are_archived_to_an_s3_bucket_exactly_once_then_deleted_and_restored_unchanged(tickets, s3_bucket):
    import boto3

    storage = retention.S3ArchiveStorage(**s3_bucket)
    everything = snapshot(Trace.objects.all())
    due = snapshot(
        Trace.objects.filter(
            started_at__lt=timezone.now() - timedelta(days=30), ticket__status__in=["resolved", "dead_lettered"]
        )
    )

    report = traces_archive(older_than=timedelta(days=30), batch_size=10, storage=storage)

    assert report.archived == 26 and report.batches == 3
    assert all(uri.startswith(f"s3://{s3_bucket['bucket']}/traces/") for uri in report.objects)
    s3 = boto3.client("s3", endpoint_url=s3_bucket["endpoint_url"], region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket["bucket"])["Contents"]]
    assert len(keys) == 3 and all(k.startswith("traces/") and k.endswith(".jsonl.gz") for k in keys)
    assert {r["id"]: r for r in archived_traces(storage)} == due  # every field, from the server's bytes
    assert not Trace.objects.filter(id__in=due).exists()

    assert traces_restore(storage=storage) == 26
    assert snapshot(Trace.objects.all()) == everything


def test_nothing_is_deleted_when_the_bucket_does_not_take_the_object(tickets, s3_bucket):
    from botocore.exceptions import ClientError

    storage = retention.S3ArchiveStorage(**{**s3_bucket, "bucket": "no-such-bucket"})
    before = snapshot(Trace.objects.all())

    with pytest.raises(ClientError):
        traces_archive(older_than=timedelta(days=30), batch_size=10, storage=storage)

    assert snapshot(Trace.objects.all()) == before


def test_the_s3_storage_is_chosen_from_the_environment(tickets, s3_bucket, monkeypatch, settings):
    from project.settings import base

    monkeypatch.setenv("TRACE_ARCHIVE_STORAGE", "agents.retention.S3ArchiveStorage")
    monkeypatch.setenv("TRACE_ARCHIVE_S3_BUCKET", s3_bucket["bucket"])
    monkeypatch.setenv("TRACE_ARCHIVE_S3_ENDPOINT_URL", s3_bucket["endpoint_url"])
    monkeypatch.setenv("TRACE_ARCHIVE_S3_REGION", "us-east-1")
    settings.TRACE_RETENTION = {
        "STORAGE": "agents.retention.S3ArchiveStorage",
        "STORAGE_OPTIONS": base._archive_storage_options(),
    }

    call_command("archive_traces", "--older-than-days", "30", "--until-done", stdout=open("/dev/null", "w"))  # noqa: SIM115

    assert isinstance(retention.archive_storage(), retention.S3ArchiveStorage)
    assert len(list(archived_traces())) == 26 and Trace.objects.count() == 7
