"""The kombu fix (project/kombu_fixes.py): closing a channel whose broker connection is gone must
not raise, or a thread-pool worker stops its pool and keeps consuming — silently dead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from django.conf import settings

from project import kombu_fixes


@pytest.fixture
def orphaned_channel() -> Iterator[Any]:
    """A Redis channel holding a delivered, unacknowledged message, its transport's connection gone
    (what the consumer's restart finds after the broker dropped it)."""
    connection = kombu.Connection(settings.CELERY_BROKER_URL)
    channel = connection.channel()
    channel.qos._delivered["delivery-1"] = True
    client, channel.connection.client, channel._pool = channel.connection.client, None, None
    yield channel
    channel.qos._delivered.clear()
    channel.connection.client = client
    connection.release()


def test_without_the_fix_the_restore_raises_the_error_that_kills_the_worker(orphaned_channel, monkeypatch):
    monkeypatch.setattr(kombu_fixes.kombu_redis.QoS, "restore_unacked", kombu_fixes._original)

    with pytest.raises(AttributeError, match="hostname"):
        orphaned_channel.qos.restore_unacked()


def test_with_the_fix_the_messages_are_left_to_the_visibility_timeout(orphaned_channel, caplog):
    kombu_fixes.apply()

    orphaned_channel.qos.restore_unacked()

    assert orphaned_channel.qos._delivered == {}
    assert "left to the visibility timeout" in caplog.text
    assert kombu_fixes.kombu_redis.QoS.restore_unacked is kombu_fixes._restore_unacked  # the app applies it
