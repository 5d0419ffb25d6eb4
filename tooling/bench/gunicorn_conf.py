"""gunicorn hooks for the bench's API (`gunicorn -c python:bench.gunicorn_conf ...`): count each
request's database round trips under `api.submit` (POST /api/v1/tickets/) or `api.other` (see `bench.probe`). Every other setting
stays on the command line, as in the Procfile."""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    from django.conf import settings

    from tooling.bench import probe

    if probe.enabled():
        probe.install(settings.REDIS_URL)


def pre_request(worker: Any, req: Any) -> None:
    from tooling.bench import probe

    submit = req.method == "POST" and req.path.rstrip("/") == "/api/v1/tickets"
    probe.begin("api.submit" if submit else "api.other")


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    from tooling.bench import probe

    probe.end()
