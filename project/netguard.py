"""Outbound calls to tenant-supplied URLs never reach the operator's network (issue #13).

Two checks, as `advocate` does for requests: `check_url` when a URL is submitted (a clear 400), and
`guarded_client()` when it is called: its transport resolves the name once, refuses unless every
address is public (or the host is in `CALLBACK_ALLOWED_HOSTS`), and connects to the address it
checked, so a name that resolves elsewhere by then (DNS rebinding) gets nowhere; the URL keeps the
name, so the Host header and TLS SNI (and certificate check) are the original host's. It never
follows redirects, holds a whole request to one deadline (connect + write + read, a trickling
server included) and cuts the response at a size.

Lives in `project/` because both `tickets` (the API) and `agents` (the outbox) use it, and
`tickets` does not import `agents`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[IPAddress]]

MAX_URL_CHARS = 2_000
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024

# Cloud metadata and host-agent endpoints; most are in blocked ranges anyway, some are public.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS time sync over IPv6
    )
)
_RANGES = [
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("100.64.0.0/10", "a shared (CGNAT) address"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.88.99.0/24", "a 6to4 relay address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("fec0::/10", "a site-local address"),
    )
]
_CLASSES: list[tuple[str, Callable[[Any], bool]]] = [
    ("an unspecified address", lambda ip: ip.is_unspecified),
    ("a loopback address", lambda ip: ip.is_loopback),
    ("a link-local address", lambda ip: ip.is_link_local),
    ("a multicast address", lambda ip: ip.is_multicast),
    ("a private address", lambda ip: ip.is_private),
    ("a reserved address", lambda ip: ip.is_reserved),
    ("not a global address", lambda ip: not ip.is_global),
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")
_V4_COMPAT = ipaddress.ip_network("::/96")
_NUMBER = re.compile(r"0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*", re.I)  # an inet_aton part


class BlockedURL(ValueError):
    """The URL may not be called; the message says why, for the client's 400."""


class OutboundBlocked(httpx.ConnectError):
    """The delivery guard refused to connect; trying again will not help unless DNS changes."""

    permanent = True


class ResponseTooLarge(httpx.ReadError):
    """The answer was longer than the guard reads."""


# --- addresses ----------------------------------------------------------------------------------


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """`host` as inet_aton reads it (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`); None when it
    is not a number; BlockedURL when it looks like one but is not valid."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.fullmatch(p) for p in parts):
        return None
    values = [int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10) for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise BlockedURL(f"{host} is not a valid IPv4 address")
    return ipaddress.IPv4Address(sum(v << (8 * (3 - i)) for i, v in enumerate(head)) + last)


def parse_ip(host: str) -> IPAddress | None:
    """An IP literal in any spelling the system resolver accepts, or None for a name."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.strip("[]"))
        except ValueError as exc:
            raise BlockedURL(f"{host} is not a valid IPv6 address") from exc
    return parse_ipv4(host)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _V4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def blocked_reason(ip: IPAddress) -> str | None:
    """Why a call to `ip` could reach the operator's network, or None for a public address."""
    if ip in METADATA:
        return f"{ip} is a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        reason = blocked_reason(v4)
        if reason or ip in _V4_COMPAT:
            return f"{ip} embeds {v4}: {reason or 'a deprecated IPv4-compatible address'}"
        return None  # IPv4-mapped, NAT64 or 6to4 of a public address
    for net, reason in _RANGES:
        if ip.version == net.version and ip in net:
            return f"{ip} is {reason}"
    for reason, test in _CLASSES:
        if test(ip):
            return f"{ip} is {reason}"
    return None


def addresses_of(host: str, port: int, resolver: Resolver | None = None) -> list[IPAddress]:
    """An IP literal as it is (in any spelling; never handed to a resolver), a name resolved."""
    ip = parse_ip(host)
    return [ip] if ip is not None else list((resolver or resolve)(host, port))


def resolve(host: str, port: int) -> list[IPAddress]:
    """The system resolver's addresses for a name."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BlockedURL(f"{host} does not resolve") from exc
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise BlockedURL(f"{host} does not resolve")
    return addresses


# --- the allow-list -----------------------------------------------------------------------------


def canonical_host(host: str) -> str:
    """Lower case, no trailing dot or brackets, an IP in its one spelling (`127.1` → `127.0.0.1`)."""
    host = host.strip("[]").rstrip(".").lower()
    ip = parse_ip(host)
    return str(ip) if ip is not None else host


def allowed_hosts() -> set[tuple[str, int | None]]:
    """`CALLBACK_ALLOWED_HOSTS` (comma-separated `host[:port]`) as (canonical host, port or None)."""
    entries = getattr(settings, "CALLBACK_ALLOWED_HOSTS", ())
    if isinstance(entries, str):
        entries = entries.split(",")
    allowed = set()
    for entry in (e.strip() for e in entries):
        if entry:
            url = httpx.URL(f"http://{entry}/")
            allowed.add((canonical_host(url.raw_host.decode("ascii")), url.port))
    return allowed


def is_allowed(host: str, port: int, allowed: set[tuple[str, int | None]]) -> bool:
    host = canonical_host(host)
    return (host, None) in allowed or (host, port) in allowed


def check_addresses(host: str, port: int, addresses: Iterable[IPAddress]) -> None:
    """Refuse unless each address is public, or it or the host is in `CALLBACK_ALLOWED_HOSTS`."""
    allowed = allowed_hosts()
    if is_allowed(host, port, allowed):
        return
    for ip in addresses:
        reason = blocked_reason(ip)
        if reason and not is_allowed(str(ip), port, allowed):
            named = canonical_host(host) != str(ip)
            raise BlockedURL(f"{host} resolves to {reason}" if named else reason)


# --- at submit ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA), no trailing dot
    port: int


def parse_url(url: str) -> Target:
    """Scheme, host and port as httpx (which delivers) reads them; BlockedURL for what it refuses."""
    if len(url) > MAX_URL_CHARS or any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        raise BlockedURL("the URL is too long or has whitespace, control characters or backslashes")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise BlockedURL(f"the URL cannot be parsed: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise BlockedURL("the URL must be http or https")
    if parsed.userinfo:
        raise BlockedURL("the URL may not carry a user name or password")
    host = parsed.raw_host.decode("ascii").strip("[]").rstrip(".")
    if not host:
        raise BlockedURL("the URL has no host")
    return Target(parsed.scheme, host, parsed.port or (443 if parsed.scheme == "https" else 80))


def check_url(url: str, *, resolver: Resolver | None = None) -> Target:
    """Refuse a URL a worker could be made to call into the operator's network with: a scheme
    other than http(s) (https only in production), credentials, or a host whose addresses are not
    all public (every spelling: `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`, a name resolving there),
    unless `CALLBACK_ALLOWED_HOSTS` opens it. Raises BlockedURL with the reason."""
    target = parse_url(url)
    allowed = is_allowed(target.host, target.port, allowed_hosts())
    if getattr(settings, "PRODUCTION", False) and target.scheme != "https" and not allowed:
        raise BlockedURL("the URL must be https")
    if not allowed:
        check_addresses(target.host, target.port, addresses_of(target.host, target.port, resolver))
    return target


# --- at delivery --------------------------------------------------------------------------------

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

    def __init__(self, resolver: Resolver | None) -> None:
        self._resolver = resolver

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any) -> httpcore.NetworkStream:
        try:
            addresses = addresses_of(host, port, self._resolver)
            check_addresses(host, port, addresses)
        except BlockedURL as exc:
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
    ) -> None:
        super().__init__(trust_env=False)
        self._pool.close()
        # httpx builds its pool without a network backend to choose: the one we need is ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(resolver),
        )
        self.deadline, self.max_response_bytes = deadline, max_response_bytes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            raise OutboundBlocked("only http and https", request=request)
        token = _DEADLINE.set(time.monotonic() + self.deadline)
        try:
            timeouts = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {
                k: min(timeouts.get(k) or self.deadline, self.deadline) for k in ("connect", "read", "write", "pool")
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
) -> httpx.Client:
    """An httpx.Client for URLs a tenant gave: public addresses only (or `CALLBACK_ALLOWED_HOSTS`),
    checked at connect time on the address connected to; no redirects, no proxies from the
    environment; each request done within `timeout` seconds in all, its answer cut at
    `max_response_bytes`; certificates checked for the URL's host (`ssl_context` for another CA
    bundle). Thread-safe: share one per process. Refusals raise OutboundBlocked, an
    httpx.ConnectError; a deadline, httpx.TimeoutException; a long answer, ResponseTooLarge."""
    return httpx.Client(
        transport=GuardedTransport(
            deadline=timeout, max_response_bytes=max_response_bytes, resolver=resolver, ssl_context=ssl_context
        ),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"Accept-Encoding": "identity"},
    )
