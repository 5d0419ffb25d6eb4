"""Two fixes for kombu 5.7.0: a countdown under a second on RabbitMQ (`_routing_key`, below), and
a race in kombu's Redis transport that leaves a thread-pool worker silently dead:

When the broker connection drops, the consumer restarts and closes its channels; closing a channel
hands its delivered-but-unacknowledged messages back (`QoS.restore_unacked`). If the transport's
connection was already released, building a Redis client for that raises
`AttributeError: 'NoneType' object has no attribute 'hostname'` (kombu 5.7.0,
`Channel._connparams`; kombu issues #582, #970). The error escapes the consumer's restart as an
"Unrecoverable error": the worker stops its pool, yet the consumer reconnects and reports
"ready" — a worker that takes messages and never runs them (seen in tests/system/reliability with the
`execute` and `webhooks` thread pools on a Redis restart).

Handing the messages back at that moment is impossible anyway (there is no connection) and not
needed: they stay in the transport's unacked index in Redis and are restored by
`restore_visible` after the visibility timeout (or are gone with a Redis that restarted empty, in
which case the sweeper re-sends the work from Postgres). So the restore is skipped, with a
warning, when the channel has no connection left.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import native_delayed_delivery
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

_original = kombu_redis.QoS.restore_unacked


def _restore_unacked(self: Any, client: Any = None) -> Any:
    transport = getattr(self.channel, "connection", None)
    if client is None and getattr(transport, "client", None) is None:
        log.warning(
            "broker connection already gone: %d unacknowledged message(s) left to the visibility timeout",
            len(self._delivered),
        )
        self._delivered.clear()
        return None
    return _original(self, client)


_original_routing_key = native_delayed_delivery.calculate_routing_key
_NO_DELAY = "0." * native_delayed_delivery.MAX_NUMBER_OF_BITS_TO_USE


def _routing_key(countdown: int, routing_key: str) -> str:
    """RabbitMQ's native delayed delivery for a countdown under a second (kombu 5.7.0).

    Celery publishes a countdown through the delay exchanges with `int(countdown)` whole seconds,
    and kombu refuses 0 — so every countdown between 0 and 1 s (a retry's jittered backoff, the
    callbacks' 100 ms window) raised ValueError on RabbitMQ with quorum queues. A zero delay routes
    the message straight through the topology; the worker waits out the rest from the message's eta.
    """
    if countdown < 1 and routing_key:
        return _NO_DELAY + native_delayed_delivery._delay_prefix_re.sub("", routing_key, count=1)
    return _original_routing_key(countdown, routing_key)


def apply() -> None:
    """Install the fixes (idempotent)."""
    if kombu_redis.QoS.restore_unacked is not _restore_unacked:
        kombu_redis.QoS.restore_unacked = _restore_unacked
    from celery.app import base as celery_base

    celery_base.calculate_routing_key = _routing_key
