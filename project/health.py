"""Health: `/healthz` (the process answers) and `/readyz` (it can do its work).

- `/healthz` touches nothing: a liveness probe must not restart the API because Postgres is away.
- `/readyz` asks Postgres (`SELECT 1`), the broker (a connection and, on Redis, a PING) and whether
  every migration is applied; 503 with the failing checks otherwise, so a load balancer sends no
  request to an instance that would fail it.

Workers have no HTTP port: their liveness is their heartbeat (`project/heartbeat.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse, JsonResponse

_migrated: dict[str, bool] = {}


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers HTTP."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: Postgres answers, migrations are applied, the broker answers.

    `?skip=broker` leaves the broker out: a Service's readiness probe uses it, so a broker blip does
    not take every web pod out of the Service at once; the API itself then answers 503 with
    Retry-After (backpressure), which a client can act on, instead of the ingress's error page."""
    checks = {"postgres": check_postgres, "migrations": check_migrations, "broker": check_broker}
    if "broker" in request.GET.getlist("skip"):
        del checks["broker"]
    failed: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:  # any failure means not ready; the reason goes in the answer
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ok", "checks": sorted(checks)})


class ProbeMiddleware:
    """Answers the probes and the metrics scrape before Django checks the Host header: kubelet and
    Prometheus address a pod by its IP, which no ALLOWED_HOSTS names. Everything else is untouched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = _probe_views().get(request.path_info)
        return view(request) if view else self.get_response(request)


def _probe_views() -> dict[str, Callable[[HttpRequest], HttpResponse]]:
    from project.access import internal_only
    from project.metrics import metrics_view

    # /metrics keeps its guard: only METRICS_ALLOWED_CIDRS or the bearer METRICS_TOKEN (project/access.py).
    return {"/healthz": healthz, "/readyz": readyz, "/metrics": internal_only(metrics_view)}


def check_postgres() -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")


def check_migrations() -> None:
    """Every migration on disk is applied (remembered once true: migrations are not undone live)."""
    if _migrated.get(DEFAULT_DB_ALIAS):
        return
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise RuntimeError(f"{len(plan)} migration(s) not applied, first {plan[0][0]}")
    _migrated[DEFAULT_DB_ALIAS] = True


def check_broker(timeout: float = 3.0) -> None:
    """A new broker connection, and a channel (kombu's Redis channel PINGs when it opens)."""
    from django.conf import settings

    from project.celery import app

    with app.connection_for_write(settings.CELERY_BROKER_URL, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        conn.default_channel  # noqa: B018 - opening it is the check
