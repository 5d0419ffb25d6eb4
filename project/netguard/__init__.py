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

from project.netguard.addresses import (
    METADATA,
    BlockedURL,
    IPAddress,
    LookupFailed,
    Resolver,
    Target,
    allowed_hosts,
    blocked_reason,
    check_url,
    lookups_for,
    parse_ip,
    resolve,
)
from project.netguard.transport import GuardedTransport, OutboundBlocked, ResponseTooLarge, guarded_client

__all__ = [
    "METADATA",
    "BlockedURL",
    "GuardedTransport",
    "IPAddress",
    "LookupFailed",
    "OutboundBlocked",
    "Resolver",
    "ResponseTooLarge",
    "Target",
    "allowed_hosts",
    "blocked_reason",
    "check_url",
    "guarded_client",
    "lookups_for",
    "parse_ip",
    "resolve",
]
