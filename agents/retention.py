"""Trace retention: archive old traces in batches to compressed JSONL, then delete them.

A batch is archived in one transaction: lock the oldest eligible rows (`SKIP LOCKED`, so two
archivers never take the same rows), write them as one gzip'd JSONL object, read it back and
check it, delete the rows, commit. If anything fails before the commit nothing is deleted; if the
process dies after the write but before the commit, the next run selects the same oldest rows,
derives the same object name from the first of them and replaces the object — so every trace is
in the archive exactly once. Only traces of settled tickets (resolved, dead-lettered) are taken:
a ticket still in flight or waiting for a person keeps its whole story in Postgres. The ticket
row — status, intent, confidence, action, reply, cost, timestamps — is never touched.

Storage is a small contract (`ArchiveStorage`), chosen by dotted path in
`settings.TRACE_RETENTION["STORAGE"]`: the local filesystem (the development default) or any
S3-compatible object store through django-storages (`S3ArchiveStorage`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.module_loading import import_string

from agents.models import Trace
from tickets.models import Status

FIELDS = (
    "id",
    "ticket_id",
    "stage",
    "attempt",
    "status",
    "started_at",
    "finished_at",
    "duration_ms",
    "confidence",
    "tier",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cache_hit",
    "error_class",
    "error_message",
    "output",
)
_DATETIMES = ("started_at", "finished_at")
# Only these tickets' traces are archived; the rest may still be resumed, replayed or reviewed.
SETTLED = (Status.RESOLVED, Status.DEAD_LETTERED)
DEFAULTS: dict[str, Any] = {
    "ARCHIVE_AFTER_DAYS": 30,
    "BATCH_SIZE": 5000,
    "TIME_BUDGET_SECONDS": 45.0,  # below the maintenance task's 60 s soft time limit
    "STORAGE": "agents.retention.LocalArchiveStorage",
    "STORAGE_OPTIONS": {"location": str(Path(settings.BASE_DIR) / "var" / "archive" / "traces")},
}


def option(name: str) -> Any:
    """A retention setting from `settings.TRACE_RETENTION`, with its default."""
    return {**DEFAULTS, **getattr(settings, "TRACE_RETENTION", {})}[name]


class ArchiveStorage:
    """Where archived traces live: whole named objects, written atomically.

    `write(name, data)` stores `data` under `name`, replacing an object of that name in one step
    (a reader never sees half an object), and returns its URI. `read(name)` returns the bytes
    written; `names(prefix)` lists stored names in order. Names are `/`-separated relative paths.
    """

    def write(self, name: str, data: bytes) -> str:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def names(self, prefix: str = "") -> list[str]:
        raise NotImplementedError


class LocalArchiveStorage(ArchiveStorage):
    """A directory on the local filesystem (or a mounted volume)."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.root = Path(location)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"archive name escapes the archive: {name!r}")
        return path

    def write(self, name: str, data: bytes) -> str:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic: the old object or the new one, never a mix
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        return path.as_uri()

    def read(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def names(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*.jsonl.gz") if p.is_file())
        return sorted(n for n in found if n.startswith(prefix))


class S3ArchiveStorage(ArchiveStorage):
    """A bucket of an S3-compatible object store, through django-storages' S3 backend.

    A PUT replaces an object whole, so a reader never sees half of one. Credentials come from
    boto3's usual chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, a pod's web identity, ...)
    unless given here; `endpoint_url` names a server other than AWS (MinIO, Ceph, ...).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "traces",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        from storages.backends.s3 import S3Storage

        if not bucket:
            raise ValueError("S3ArchiveStorage needs a bucket (TRACE_ARCHIVE_S3_BUCKET)")
        self.prefix = prefix.strip("/")
        self.backend = S3Storage(
            bucket_name=bucket,
            location=self.prefix,
            endpoint_url=endpoint_url or None,
            region_name=region_name or None,
            access_key=access_key or None,
            secret_key=secret_key or None,
            file_overwrite=True,  # a rerun after a crash replaces the same object (see above)
            default_acl=None,
            querystring_auth=False,
        )

    def write(self, name: str, data: bytes) -> str:
        from django.core.files.base import ContentFile

        self.backend.save(name, ContentFile(data))
        key = f"{self.prefix}/{name}" if self.prefix else name
        return f"s3://{self.backend.bucket_name}/{key}"

    def read(self, name: str) -> bytes:
        with self.backend.open(name, "rb") as fh:
            return fh.read()

    def names(self, prefix: str = "") -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        found = self.backend.bucket.objects.filter(Prefix=root + prefix)
        return sorted(o.key[len(root) :] for o in found if o.key.endswith(".jsonl.gz"))


def archive_storage() -> ArchiveStorage:
    """The configured storage."""
    return import_string(option("STORAGE"))(**option("STORAGE_OPTIONS"))


def _line(row: dict[str, Any]) -> str:
    out = dict(row)
    for key in _DATETIMES:
        out[key] = out[key].isoformat()
    out["ticket_id"] = str(out["ticket_id"])
    out["cost_usd"] = str(out["cost_usd"])  # a string keeps every decimal place
    raw = out.pop("output_json", None)
    if raw is None:
        return json.dumps(out, sort_keys=True, ensure_ascii=False)
    # Postgres's own text of the jsonb: spliced in as is, not parsed and dumped again (a third
    # of the time of a batch). jsonb text escapes control characters, so it stays on one line.
    out.pop("output", None)
    return f'{json.dumps(out, sort_keys=True, ensure_ascii=False)[:-1]}, "output": {raw}}}'


def encode(rows: Iterable[dict[str, Any]]) -> bytes:
    """Rows (`output` as a value, or as JSON text in `output_json`) as gzip'd JSON Lines."""
    lines = "".join(_line(r) + "\n" for r in rows)
    return gzip.compress(lines.encode(), compresslevel=6, mtime=0)


def decode(data: bytes) -> Iterator[dict[str, Any]]:
    """Archived rows with their types back: datetimes, the ticket's UUID, the Decimal cost."""
    for line in gzip.decompress(data).decode().splitlines():
        row = json.loads(line)
        for key in _DATETIMES:
            row[key] = datetime.fromisoformat(row[key])
        row["ticket_id"] = uuid.UUID(row["ticket_id"])
        row["cost_usd"] = Decimal(row["cost_usd"])
        yield row


def object_name(first: dict[str, Any]) -> str:
    """Named after the batch's first row: a rerun after a crash rewrites the same object."""
    at: datetime = first["started_at"].astimezone(UTC)
    return f"{at:%Y/%m/%d}/traces-{at:%Y%m%dT%H%M%S%fZ}-{first['id']}.jsonl.gz"


@dataclass
class ArchiveReport:
    """What one archiving run did."""

    cutoff: str
    archived: int = 0
    batches: int = 0
    objects: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _archive_batch(cutoff: datetime, batch_size: int, storage: ArchiveStorage) -> tuple[int, str]:
    with transaction.atomic():
        rows = list(
            Trace.objects.filter(started_at__lt=cutoff, ticket__status__in=SETTLED)
            .order_by("started_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .annotate(output_json=Cast("output", TextField()))
            .values(*(f for f in FIELDS if f != "output"), "output_json")[:batch_size]
        )
        if not rows:
            return 0, ""
        data = encode(rows)
        name = object_name(rows[0])
        uri = storage.write(name, data)
        if hashlib.sha256(storage.read(name)).digest() != hashlib.sha256(data).digest():
            raise OSError(f"archive object {uri} does not read back as written")
        deleted, _ = Trace.objects.filter(id__in=[r["id"] for r in rows]).delete()
        if deleted != len(rows):  # cannot happen while we hold the row locks; refuse rather than guess
            raise RuntimeError(f"deleted {deleted} of {len(rows)} archived traces")
    return len(rows), uri


def traces_archive(
    *,
    older_than: timedelta | None = None,
    batch_size: int | None = None,
    time_budget: float | None = None,
    storage: ArchiveStorage | None = None,
) -> ArchiveReport:
    """Archive then delete traces older than `older_than`, batch by batch, within a time budget."""
    older_than = older_than if older_than is not None else timedelta(days=option("ARCHIVE_AFTER_DAYS"))
    batch_size = batch_size or option("BATCH_SIZE")
    budget = time_budget if time_budget is not None else option("TIME_BUDGET_SECONDS")
    storage = storage or archive_storage()
    cutoff = timezone.now() - older_than
    report, t0 = ArchiveReport(cutoff=cutoff.isoformat()), time.monotonic()
    while time.monotonic() - t0 < budget:
        n, uri = _archive_batch(cutoff, batch_size, storage)
        if n:
            report.archived, report.batches = report.archived + n, report.batches + 1
            report.objects.append(uri)
        if n < batch_size:
            break
    report.seconds = round(time.monotonic() - t0, 3)
    return report


def archived_traces(storage: ArchiveStorage | None = None, prefix: str = "") -> Iterator[dict[str, Any]]:
    """Every archived trace row under `prefix` (e.g. "2025/01/"), object by object."""
    storage = storage or archive_storage()
    for name in storage.names(prefix):
        yield from decode(storage.read(name))


def _restore_batch(rows: list[dict[str, Any]]) -> int:
    from tickets.models import Ticket

    alive = set(Ticket.objects.filter(pk__in={r["ticket_id"] for r in rows}).values_list("pk", flat=True))
    present = set(Trace.objects.filter(id__in=[r["id"] for r in rows]).values_list("id", flat=True))
    fresh = [Trace(**r) for r in rows if r["ticket_id"] in alive and r["id"] not in present]
    Trace.objects.bulk_create(fresh, ignore_conflicts=True)
    return len(fresh)


def traces_restore(*, storage: ArchiveStorage | None = None, prefix: str = "") -> int:
    """Put archived traces of tickets that still exist back into Postgres; idempotent. Returns rows added."""
    restored, batch = 0, []
    for row in archived_traces(storage, prefix):
        batch.append(row)
        if len(batch) >= 1000:
            restored, batch = restored + _restore_batch(batch), []
    return restored + (_restore_batch(batch) if batch else 0)
