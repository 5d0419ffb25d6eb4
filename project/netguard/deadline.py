"""A whole-request deadline for the model provider's client (the `anthropic` SDK, which is built on
`httpx2`): connect, write and every read end by one deadline, so a server that trickles its answer
cannot hold a thread of the llm queue's pool, where Celery's time limits do not fire. The provider's
URL is the operator's, so no address check (that is `guarded_client`'s job, for tenants' URLs)."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

import httpcore2
import httpx2

_DEADLINE: ContextVar[float | None] = ContextVar("model_call_deadline", default=None)


def _left(timeout: float | None, exc: type[Exception]) -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, _left(timeout, httpcore2.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore2.SyncBackend):
    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any) -> httpcore2.NetworkStream:
        return _Stream(super().connect_tcp(host, port, _left(timeout, httpcore2.ConnectTimeout), **kwargs))


class DeadlineTransport(httpx2.HTTPTransport):
    """httpx2's transport, each request (its answer read in full) done within `deadline` seconds,
    or the request's own shorter timeout."""

    def __init__(self, *, deadline: float) -> None:
        super().__init__()
        self._pool.close()
        self._pool = httpcore2.ConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_Backend(),
        )
        self.deadline = deadline

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts = request.extensions.get("timeout") or {}
        deadline = min([self.deadline, *(t for t in timeouts.values() if t)])
        token = _DEADLINE.set(time.monotonic() + deadline)
        try:
            response = super().handle_request(request)
            try:
                content = b"".join(response.iter_raw())  # still encoded: the client decodes it
            finally:
                response.close()
        finally:
            _DEADLINE.reset(token)
        return httpx2.Response(
            response.status_code, headers=response.headers, content=content, extensions=response.extensions
        )


def model_http_client(*, timeout: float) -> httpx2.Client:
    """An httpx2.Client for the model provider whose every request ends within `timeout` seconds in
    all. Like the SDK's own client it follows redirects; unlike it, it reads no proxy from the
    environment (a proxy's transport would not keep the deadline)."""
    return httpx2.Client(
        transport=DeadlineTransport(deadline=timeout), timeout=timeout, follow_redirects=True, trust_env=False
    )
