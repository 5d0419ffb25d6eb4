"""Structured logs: one JSON object a line, each carrying the ticket, client, stage and attempt.

The context lives in contextvars, so a thread-pool worker's threads never see each other's
ticket. Celery's `task_prerun` binds the ticket and stage from the task's arguments and
`task_postrun` clears them; the pipeline's `stage_finished` receiver (`agents/metrics.py`) adds
the client and the attempt. Messages are masked with the same detectors parse uses to mark what
is sensitive (card numbers, e-mail addresses, phone numbers), so a line never carries them.

This module is loaded by `LOGGING` before the apps are ready: it imports no models.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery.signals import task_postrun, task_prerun

from project.sensitive import find_sensitive, mask

CONTEXT_FIELDS = ("ticket_id", "client_id", "stage", "attempt")
# Per-task and per-request chatter: a stage attempt already has its one line (`agents.stage`).
QUIET_LOGGERS = {
    "celery.app.trace": "WARNING",  # "Task ... succeeded in ..." for every task
    "celery.worker.strategy": "WARNING",  # "Task ... received" for every task
    "httpx": "WARNING",  # "HTTP Request: POST ..." for every model call and callback
    "django.db.backends": "WARNING",
}
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("log_context", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def logging_config(*, level: str = "INFO", json_lines: bool = True) -> dict[str, Any]:
    """The `LOGGING` dict: JSON lines (or plain text for a terminal) on stderr, chatter quietened."""
    plain = "%(asctime)s %(levelname)s %(name)s [%(ticket_id)s %(stage)s#%(attempt)s] %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "project.logging.ContextFilter"}},
        "formatters": {
            "json": {"()": "project.logging.JsonFormatter"},
            "plain": {"()": "project.logging.MaskingFormatter", "format": plain},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if json_lines else "plain",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {name: {"level": lvl} for name, lvl in QUIET_LOGGERS.items()},
    }


def bind(**fields: Any) -> None:
    """Add fields to the current context (this thread or task only)."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def clear() -> None:
    """Forget the current context (the task ended)."""
    _context.set(None)


def current() -> dict[str, Any]:
    """The fields bound in this context."""
    return dict(_context.get() or {})


def mask_sensitive(text: str) -> str:
    """Replace what parse would mark as sensitive with its typed placeholder."""
    spans = find_sensitive(text)
    return mask(text, spans) if spans else text


class ContextFilter(logging.Filter):
    """Stamp every record with the bound context; the four fields are always present."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _context.get() or {}
        for name in {*CONTEXT_FIELDS, *bound}:
            if getattr(record, name, None) is None:
                setattr(record, name, bound.get(name))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, then any `extra=` fields."""

    def __init__(self, *args: Any, mask: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        ContextFilter().filter(record)  # also works when the handler was set up without the filter
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": self._mask(message),
        }
        out.update({name: getattr(record, name, None) for name in CONTEXT_FIELDS})
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in out and not key.startswith("_"):
                out[key] = self._mask(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = self._mask(self.formatException(record.exc_info))
        elif record.stack_info:
            out["stack"] = self._mask(self.formatStack(record.stack_info))
        return json.dumps(out, default=str, ensure_ascii=False)

    def _mask(self, text: str) -> str:
        return mask_sensitive(text) if self.mask else text


class MaskingFormatter(logging.Formatter):
    """A plain-text formatter that masks like the JSON one (for a developer's terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        ContextFilter().filter(record)
        return mask_sensitive(super().format(record))


@task_prerun.connect(dispatch_uid="project.logging.task_prerun")
def _bind_task(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    # A task that knows what its arguments are (the pipeline's: the ticket and the stage) says so
    # through `log_fields(args)`; this module names no app's tasks.
    clear()
    fields: dict[str, Any] = {"task": getattr(task, "name", "") or "", "task_id": task_id}
    log_fields = getattr(task, "log_fields", None)
    if log_fields is not None and args:
        fields.update(log_fields(args))
    bind(**fields)


@task_postrun.connect(dispatch_uid="project.logging.task_postrun")
def _clear_task(**_: Any) -> None:
    clear()
