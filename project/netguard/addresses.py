"""Which hosts a tenant's URL may reach: every spelling of an address, the allow-list, the submit-time check."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import httpx
from django.conf import settings

_log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port, seconds) -> addresses; a name that cannot resolve raises BlockedURL, a temporary
# failure LookupFailed, and it returns or raises within the seconds it is given.
Resolver = Callable[[str, int, float], Sequence[IPAddress]]

MAX_URL_CHARS = 2_000
SUBMIT_LOOKUP_SECONDS = 2.0

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


class LookupFailed(BlockedURL):
    """The name did not resolve now, but may later (a timeout, SERVFAIL, no server answering, too
    many lookups of this tenant in flight): a caller tries again; NXDOMAIN is a plain BlockedURL."""

    permanent = False


class LookupTimeout(LookupFailed):
    """The name did not resolve in time."""


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


def addresses_of(host: str, port: int, resolver: Resolver | None = None, *, timeout: float) -> list[IPAddress]:
    """An IP literal as it is (in any spelling; never handed to a resolver), a name resolved within
    `timeout` seconds in the calling thread: a tenant's slow DNS server holds only its own request,
    never a shared pool, and a tenant has at most `NETGUARD_LOOKUPS_PER_TENANT` lookups in flight
    (see `lookups_for`)."""
    ip = parse_ip(host.rstrip("."))
    if ip is not None:
        return [ip]
    with _lookup_slot():
        return list((resolver or resolve)(host, port, timeout))


# --- name lookups -------------------------------------------------------------------------------
# dnspython rather than getaddrinfo: a lookup ends by its deadline (getaddrinfo cannot be cancelled,
# so a name whose server never answers held a thread of a shared pool for the resolver's full
# retry schedule), and its errors tell a temporary failure from a name that does not exist.
# /etc/hosts first, as the system's resolver does; then the servers of /etc/resolv.conf (or
# `NETGUARD_DNS_SERVERS`, "ip[:port]" each), with its search list.

_TENANT: ContextVar[str | None] = ContextVar("netguard_tenant", default=None)
_in_flight: Counter[str] = Counter()
_in_flight_lock = threading.Lock()


@contextmanager
def lookups_for(tenant: object) -> Iterator[None]:
    """Count the name lookups made inside against `tenant` (a client id): one tenant's names that
    never answer hold at most `NETGUARD_LOOKUPS_PER_TENANT` of this process's threads at a time;
    more fail at once, as temporary failures."""
    token = _TENANT.set(str(tenant))
    try:
        yield
    finally:
        _TENANT.reset(token)


@contextmanager
def _lookup_slot() -> Iterator[None]:
    tenant = _TENANT.get()
    if tenant is None:
        yield
        return
    limit = max(1, int(getattr(settings, "NETGUARD_LOOKUPS_PER_TENANT", 4)))
    with _in_flight_lock:
        if _in_flight[tenant] >= limit:
            raise LookupFailed(f"{limit} name lookups of this client are in flight; try again shortly")
        _in_flight[tenant] += 1
    try:
        yield
    finally:
        with _in_flight_lock:
            _in_flight[tenant] -= 1
            if not _in_flight[tenant]:
                del _in_flight[tenant]


_cache: dict[str, tuple[Any, Any]] = {}
_cache_lock = threading.Lock()


def _cached(path: str, build: Callable[[], Any], extra: Any = None) -> Any:
    """`build()`, rebuilt when the file at `path` (or `extra`) changes."""
    try:
        stamp = (os.stat(path).st_mtime_ns, extra)
    except OSError:
        stamp = (None, extra)
    with _cache_lock:
        hit = _cache.get(path)
        if hit is None or hit[0] != stamp:
            hit = _cache[path] = (stamp, build())
        return hit[1]


def _hosts_file() -> dict[str, list[IPAddress]]:
    path = getattr(settings, "NETGUARD_HOSTS_FILE", "/etc/hosts")

    def build() -> dict[str, list[IPAddress]]:
        names: dict[str, list[IPAddress]] = {}
        try:
            with open(path, encoding="utf-8", errors="replace") as hosts:
                lines = hosts.read().splitlines()
        except OSError:
            return names
        for line in lines:
            address, *aliases = line.split("#", 1)[0].split() or [""]
            try:
                ip = ipaddress.ip_address(address.split("%")[0])
            except ValueError:
                continue
            for name in aliases:
                entry = names.setdefault(name.lower().rstrip("."), [])
                if ip not in entry:
                    entry.append(ip)
        return names

    return _cached(path, build)


def _dns_resolver() -> dns.resolver.Resolver:
    path = getattr(settings, "NETGUARD_RESOLV_CONF", "/etc/resolv.conf")
    servers = getattr(settings, "NETGUARD_DNS_SERVERS", None) or []
    if isinstance(servers, str):
        servers = [s for s in servers.split(",") if s.strip()]

    def build() -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        try:
            resolver.read_resolv_conf(path)
        except dns.resolver.NoResolverConfiguration:
            if not servers:
                raise
        if servers:
            resolver.nameservers = [_nameserver(entry.strip()) for entry in servers]
        resolver.cache = None  # a name's addresses are checked as they are now (DNS rebinding)
        return resolver

    return _cached(path, build, tuple(servers))


def _nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    """`ip`, `ip:port` or `[ipv6]:port`."""
    if entry.startswith("["):
        address, _, port = entry[1:].partition("]:")
        return dns.nameserver.Do53Nameserver(address.rstrip("]"), int(port or 53))
    if entry.count(":") == 1:
        address, port = entry.split(":")
        return dns.nameserver.Do53Nameserver(address, int(port))
    return dns.nameserver.Do53Nameserver(entry, 53)


_BAD_NAME = (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.BadEscape)


def resolve(host: str, port: int, timeout: float = SUBMIT_LOOKUP_SECONDS) -> list[IPAddress]:
    """A name's addresses (/etc/hosts, then DNS) within `timeout` seconds. BlockedURL when the name
    does not exist or has no address; LookupFailed when no answer came in time, or the servers
    failed (SERVFAIL, refused): worth trying again."""
    name = host.rstrip(".").lower()
    try:
        name.encode("ascii")
    except UnicodeError as exc:
        raise BlockedURL(f"{host} does not resolve") from exc
    known = _hosts_file().get(name)
    if known:
        return list(known)
    started = time.monotonic()
    try:
        answers = _dns_resolver().resolve_name(name, lifetime=max(0.01, timeout), search=True)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN, *_BAD_NAME) as exc:
        raise BlockedURL(f"{host} does not resolve") from exc
    except dns.exception.Timeout as exc:
        raise LookupTimeout(f"{host} did not resolve within {timeout:g}s") from exc
    except (dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration, dns.exception.DNSException) as exc:
        if time.monotonic() - started >= timeout:
            raise LookupTimeout(f"{host} did not resolve within {timeout:g}s") from exc
        raise LookupFailed(f"{host} did not resolve (a temporary DNS failure: {type(exc).__name__})") from exc
    addresses: list[IPAddress] = []
    for text in answers.addresses():
        address = ipaddress.ip_address(text.split("%")[0])
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


def allowed_hosts(allow_list: str = "CALLBACK_ALLOWED_HOSTS") -> set[tuple[str, int | None]]:
    """The setting `allow_list` (comma-separated `host[:port]`: `CALLBACK_ALLOWED_HOSTS` for tenants'
    callbacks, `DOWNSTREAM_ALLOWED_HOSTS` for the operator's webhooks) as (canonical host, port or None)."""
    entries = getattr(settings, allow_list, ())
    if isinstance(entries, str):
        entries = entries.split(",")
    allowed = set()
    for entry in (e.strip() for e in entries):
        try:
            url = httpx.URL(f"http://{entry}/")
            allowed.add((canonical_host(url.raw_host.decode("ascii")), url.port))
        except (httpx.InvalidURL, BlockedURL, UnicodeError):
            _log.warning("%s entry %r is not host[:port]; ignored", allow_list, entry)
    return allowed


def is_allowed(host: str, port: int, allowed: set[tuple[str, int | None]]) -> bool:
    host = canonical_host(host)
    return (host, None) in allowed or (host, port) in allowed


def check_addresses(
    host: str, port: int, addresses: Iterable[IPAddress], *, allow_list: str = "CALLBACK_ALLOWED_HOSTS"
) -> None:
    """Refuse unless each address is public, or it or the host is in the allow-list."""
    allowed = allowed_hosts(allow_list)
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
        addresses = addresses_of(target.host, target.port, resolver, timeout=SUBMIT_LOOKUP_SECONDS)
        check_addresses(target.host, target.port, addresses)
    return target
