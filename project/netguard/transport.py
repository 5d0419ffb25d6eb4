"""The delivery-time guard: an httpx transport that connects only to the addresses it checked, by a deadline."""

from __future__ import annotations

import ssl
import time
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from project.netguard.addresses import (
    SUBMIT_LOOKUP_SECONDS,
    BlockedURL,
    LookupFailed,
    LookupTimeout,
    Resolver,
    addresses_of,
    check_addresses,
)

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024


class OutboundBlocked(httpx.ConnectError):
    """The delivery guard refused to connect; trying again will not help unless DNS changes."""

    permanent = True


class ResponseTooLarge(httpx.ReadError):
    """The answer was longer than the guard reads."""


_DEADLINE: ContextVar[float | None] = ContextVar("netguard_deadline", default=None)


def _left(timeout: float | None, exc: type[Exception]) -> float | None:
    """The time an operation may take: its own timeout, cut to what is left of the request's."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves once, checks every address, connects to the checked one (by address, no DNS)."""

    def __init__(self, resolver: Resolver | None, allow_list: str) -> None:
        self._resolver, self._allow_list = resolver, allow_list

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)  # the lookup counts against the deadline too
        try:
            addresses = addresses_of(
                host, port, self._resolver, timeout=SUBMIT_LOOKUP_SECONDS if left is None else left
            )
            check_addresses(host, port, addresses, allow_list=self._allow_list)
        except LookupTimeout as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except LookupFailed as exc:  # temporary (SERVFAIL, no server answering): the caller retries
            raise httpcore.ConnectError(str(exc)) from exc
        except BlockedURL as exc:  # NXDOMAIN, or an address into the operator's network
            raise OutboundBlocked(str(exc)) from exc
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for ip in addresses:
            try:
                stream = super().connect_tcp(str(ip), port, _left(timeout, httpcore.ConnectTimeout), **kwargs)
                return _DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over the guarded backend, with a whole-request deadline and a size cap."""

    def __init__(
        self,
        *,
        deadline: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allow_list: str = "CALLBACK_ALLOWED_HOSTS",
    ) -> None:
        super().__init__(trust_env=False)
        self._pool.close()
        # httpx builds its pool without a network backend to choose: the one we need is ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(resolver, allow_list),
        )
        self.deadline, self.max_response_bytes = deadline, max_response_bytes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise OutboundBlocked("only http and https", request=request)
        # A request's own shorter timeout (a caller's budget: `post(..., timeout=3)`) is its whole deadline.
        timeouts = request.extensions.get("timeout") or {}
        deadline = min([self.deadline, *(t for t in timeouts.values() if t)])
        token = _DEADLINE.set(time.monotonic() + deadline)
        try:
            request.extensions["timeout"] = {
                k: min(timeouts.get(k) or deadline, deadline) for k in ("connect", "read", "write", "pool")
            }
            response = super().handle_request(request)
            try:
                content = self._read(response, request)
            finally:
                response.close()
        finally:
            _DEADLINE.reset(token)
        # The body as it came: a compressed answer stays compressed (a bomb cannot expand).
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(response.status_code, headers=headers, content=content, extensions=response.extensions)

    def _read(self, response: httpx.Response, request: httpx.Request) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            raise ResponseTooLarge(f"the answer declares {declared} bytes", request=request)
        chunks, size = [], 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise ResponseTooLarge(f"the answer is over {self.max_response_bytes} bytes", request=request)
            chunks.append(chunk)
        return b"".join(chunks)


def guarded_client(
    *,
    timeout: float,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
    allow_list: str = "CALLBACK_ALLOWED_HOSTS",
) -> httpx.Client:
    """An httpx.Client for URLs a tenant gave: public addresses only (or the hosts the setting
    `allow_list` opens: `CALLBACK_ALLOWED_HOSTS`, or `DOWNSTREAM_ALLOWED_HOSTS` for the operator's webhooks),
    checked at connect time on the address connected to; no redirects, no proxies from the
    environment; each request done within `timeout` seconds in all, its answer cut at
    `max_response_bytes`; certificates checked for the URL's host (`ssl_context` for another CA
    bundle). Thread-safe: share one per process. Refusals raise OutboundBlocked, an
    httpx.ConnectError whose `permanent` is True (an address inside, a name that does not exist);
    a temporary DNS failure, a plain httpx.ConnectError; a deadline, httpx.TimeoutException; a long
    answer, ResponseTooLarge."""
    return httpx.Client(
        transport=GuardedTransport(
            deadline=timeout,
            max_response_bytes=max_response_bytes,
            resolver=resolver,
            ssl_context=ssl_context,
            allow_list=allow_list,
        ),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"Accept-Encoding": "identity"},
    )
