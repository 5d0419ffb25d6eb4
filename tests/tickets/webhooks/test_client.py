"""Two allow-lists, two levels of trust (tickets/webhooks/client.py): `CALLBACK_ALLOWED_HOSTS` opens a
private host for tenants' callbacks only, `DOWNSTREAM_ALLOWED_HOSTS` for the operator's webhooks only."""

from __future__ import annotations

import pytest

from agents.tools import ToolError, tool_webhook
from project.netguard import OutboundBlocked
from tickets.webhooks.client import downstream_client, http_client


def _host(recorder) -> str:
    return recorder.url.split("/")[2]


def test_a_host_opened_for_callbacks_is_not_opened_for_the_downstream_webhooks(recorder, settings):
    settings.CALLBACK_ALLOWED_HOSTS, settings.DOWNSTREAM_ALLOWED_HOSTS = _host(recorder), ()

    assert http_client().post(recorder.url, json={}).status_code == 200
    with pytest.raises(OutboundBlocked):
        downstream_client().post(recorder.url, json={})
    with pytest.raises(ToolError, match="refused") as refused:
        tool_webhook({"url": recorder.url}, "key-1")
    assert refused.value.permanent
    assert len(recorder.requests) == 1


def test_a_host_opened_for_the_downstream_webhooks_is_not_opened_for_callbacks(recorder, settings):
    settings.CALLBACK_ALLOWED_HOSTS, settings.DOWNSTREAM_ALLOWED_HOSTS = (), _host(recorder)

    assert tool_webhook({"url": recorder.url}, "key-2") == {"status_code": 200}
    with pytest.raises(OutboundBlocked):
        http_client().post(recorder.url, json={})
    assert len(recorder.requests) == 1
