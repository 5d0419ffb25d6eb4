"""Operator endpoints (`/metrics`) are not open to the world: a scrape is answered only from the
networks in `METRICS_ALLOWED_CIDRS` (loopback by default), with `Authorization: Bearer
<METRICS_TOKEN>` when a token is set, or on `METRICS_PORT`: a second port gunicorn listens on that
no Service or Ingress routes (the chart), so the cluster's Prometheus scrapes it by pod IP and the
internet never reaches it. Everything else gets a 403, never the metrics."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from functools import lru_cache, wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

View = Callable[..., HttpResponse]


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def client_address(request: HttpRequest) -> str | None:
    """The client's address for throttling (django-axes): the peer, or behind TRUSTED_PROXY_COUNT
    proxies the entry of CLIENT_ADDRESS_HEADER the outermost one appended (entries to its left are
    the client's to write). A header with fewer entries than proxies did not come through them all:
    the peer address then."""
    peer = request.META.get("REMOTE_ADDR") or None
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return peer
    entries = [e.strip() for e in request.headers.get(settings.CLIENT_ADDRESS_HEADER, "").split(",") if e.strip()]
    if len(entries) < count:
        return peer
    try:
        return str(ipaddress.ip_address(entries[-count]))
    except ValueError:
        return peer


def arrived_on_metrics_port(request: HttpRequest) -> bool:
    """The connection came in on METRICS_PORT: gunicorn's own socket says so (not the Host header,
    which a client writes)."""
    port = settings.METRICS_PORT
    sock = request.META.get("gunicorn.socket")
    if not port or sock is None:
        return False
    try:
        return sock.getsockname()[1] == port
    except OSError:
        return False


def request_allowed(request: HttpRequest) -> bool:
    """On the metrics port, from an allowed network (the peer address, never a forwarded header), or
    with the token."""
    if arrived_on_metrics_port(request):
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    try:
        peer = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(peer in net for net in _networks(tuple(settings.METRICS_ALLOWED_CIDRS)))


def internal_only(view: View) -> View:
    """The view answers only what `request_allowed` lets through; a 403 JSON error otherwise."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not request_allowed(request):
            return JsonResponse({"error": "forbidden", "detail": "metrics are for the operator's network"}, status=403)
        return view(request, *args, **kwargs)

    return guarded
