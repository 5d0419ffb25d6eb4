"""Standard Webhooks (https://www.standardwebhooks.com) signatures for the callbacks a client receives.

Each callback carries `webhook-id` (the same on every retry of it), `webhook-timestamp` (unix
seconds) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` under the
client's `whsec_` secret. After a rotation the previous secret signs too, until its overlap ends:
the header then holds two space-separated signatures, and a receiver holding either secret accepts.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from tickets.models import Client, webhook_secret_new

ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"
DEFAULT_OVERLAP = timedelta(hours=24)
# How long a process trusts what it read of a secret's predecessor. A rotation takes effect at once
# (the new secret arrives with the claimed callback); only the end of an overlap can be seen late,
# and the expiry read with it is checked on every use.
_PREVIOUS_TTL = 30.0
_previous: dict[str, tuple[float, str, datetime | None]] = {}
_lock = threading.Lock()


def webhook_headers(*, secret: str, msg_id: str, body: bytes, at: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one callback: signed by every secret that signs for now."""
    at = at or timezone.now()
    data = body.decode()
    signatures = [Webhook(s).sign(msg_id, at, data) for s in signing_secrets(secret, at=at)]
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(int(at.timestamp())),
        SIGNATURE_HEADER: " ".join(signatures),
    }


def signing_secrets(secret: str, *, at: datetime | None = None) -> list[str]:
    """`secret` and, during a rotation's overlap, the secret it replaced."""
    at = at or timezone.now()
    previous, until = _predecessor(secret)
    if previous and until is not None and until > at:
        return [secret, previous]
    return [secret]


def _predecessor(secret: str) -> tuple[str, datetime | None]:
    now = time.monotonic()
    with _lock:
        cached = _previous.get(secret)
    if cached is not None and now - cached[0] < _PREVIOUS_TTL:
        return cached[1], cached[2]
    row = (
        Client.objects.filter(webhook_secret=secret)
        .values_list("webhook_secret_previous", "webhook_secret_previous_until")
        .first()
    )
    previous, until = row or ("", None)
    with _lock:
        _previous[secret] = (now, previous, until)
    return previous, until


def webhook_secret_rotate(*, client: Client, overlap: timedelta = DEFAULT_OVERLAP) -> str:
    """A new signing secret for `client` (returned: show it once); the old one keeps signing too
    for `overlap`, so the client can switch its receiver without refusing a callback."""
    secret = webhook_secret_new()
    with transaction.atomic():
        locked = Client.objects.select_for_update().get(pk=client.pk)
        previous_until = timezone.now() + overlap if overlap > timedelta(0) else None
        Client.objects.filter(pk=client.pk).update(
            webhook_secret=secret,
            webhook_secret_previous=locked.webhook_secret if previous_until else "",
            webhook_secret_previous_until=previous_until,
        )
    client.refresh_from_db()
    return secret
