"""Name lookups of tenants' URLs (project/netguard/addresses.py) against a real DNS server.

A small UDP server on 127.0.0.1 answers as a tenant's DNS could: never (`*.hang.test`), SERVFAIL
(`*.fail.test`), NXDOMAIN (anything unknown) or an address (`ok.test`). The code under test finds
it through its resolver configuration (`NETGUARD_RESOLV_CONF`, `NETGUARD_DNS_SERVERS`), as it finds
/etc/resolv.conf's servers in production; nothing of the resolver is mocked.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from django.utils import timezone

from agents.tools import ToolError, tool_webhook
from project.netguard import BlockedURL, LookupFailed, check_url, lookups_for
from project.netguard.addresses import LookupTimeout
from tests.conftest import wait_for
from tests.factories import ticket_make, ticket_payload
from tickets.models import CallbackDelivery, DeliveryStatus, Status, Ticket
from tickets.webhooks.delivery import callbacks_drain

PUBLIC = "93.184.215.14"


class DnsServer:
    """Answers A/AAAA queries by the name's suffix; counts the queries it leaves unanswered."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.unanswered: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text(omit_final_dot=True).lower()
            if name.endswith("hang.test"):
                self.unanswered.add(name)
                continue
            answer = dns.message.make_response(query)
            answer.flags |= dns.flags.RA
            if name.endswith("fail.test"):
                answer.set_rcode(dns.rcode.SERVFAIL)
            elif name == "ok.test":
                if query.question[0].rdtype == dns.rdatatype.A:
                    answer.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", PUBLIC))
            else:
                answer.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(answer.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def dns_server(settings, tmp_path: Path) -> Iterator[DnsServer]:
    server = DnsServer()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30\n")  # the lookup's own deadline governs
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.9.8.7 inside.test  # a host of the operator's\n")
    settings.NETGUARD_RESOLV_CONF = str(resolv)
    settings.NETGUARD_DNS_SERVERS = [f"127.0.0.1:{server.port}"]
    settings.NETGUARD_HOSTS_FILE = str(hosts)
    settings.CALLBACK_ALLOWED_HOSTS = ()
    yield server
    server.close()


def test_a_name_resolves_through_the_configured_server(dns_server) -> None:
    assert check_url("https://ok.test/hook").host == "ok.test"


def test_a_name_whose_server_never_answers_fails_by_its_deadline_as_a_temporary_failure(
    dns_server, monkeypatch
) -> None:
    monkeypatch.setattr("project.netguard.addresses.SUBMIT_LOOKUP_SECONDS", 0.5)

    with pytest.raises(LookupTimeout):
        check_url("https://never.hang.test/hook")

    assert "never.hang.test" in dns_server.unanswered  # it asked the configured server


def test_servfail_is_temporary_and_nxdomain_is_permanent(dns_server) -> None:
    with pytest.raises(LookupFailed):
        check_url("https://down.fail.test/hook")
    with pytest.raises(BlockedURL) as missing:
        check_url("https://nowhere.test/hook")
    assert not isinstance(missing.value, LookupFailed)


def test_etc_hosts_is_read_before_dns(dns_server) -> None:
    with pytest.raises(BlockedURL, match="10.9.8.7 is a private address"):
        check_url("https://inside.test/hook")


def test_one_tenants_hanging_names_never_take_another_tenants_lookups(dns_server, settings, monkeypatch) -> None:
    monkeypatch.setattr("project.netguard.addresses.SUBMIT_LOOKUP_SECONDS", 8.0)  # A's hang while B looks up
    settings.NETGUARD_LOOKUPS_PER_TENANT = 4
    busy: list[Exception] = []
    release = threading.Event()

    def hostile(i: int) -> None:
        with lookups_for("tenant-a"):
            try:
                check_url(f"https://n{i}.hang.test/hook")
            except LookupFailed as exc:
                busy.append(exc)
        release.wait()

    threads = [threading.Thread(target=hostile, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(dns_server.unanswered) >= 4 and len(busy) >= 16, what="A's lookups in flight")
        with lookups_for("tenant-b"):
            assert check_url("https://ok.test/hook").host == "ok.test"
        with lookups_for("tenant-a"), pytest.raises(LookupFailed, match="in flight"):
            check_url("https://ok.test/hook")
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert all("in flight" in str(e) for e in busy[:16])  # refused at once; the 4 in flight timed out after


def test_a_submit_whose_callback_name_fails_for_now_is_a_503_to_retry_and_a_missing_name_a_400(dns_server, api) -> None:
    http, _ = api()

    later = http.post("/api/v1/tickets/", ticket_payload(callback_url="https://cb.fail.test/hook"), format="json")
    refused = http.post("/api/v1/tickets/", ticket_payload(callback_url="https://nowhere.test/hook"), format="json")

    assert later.status_code == 503, later.json()
    assert later["Retry-After"] and later.json()["error"] == "lookup_unavailable"
    assert refused.status_code == 400 and "does not resolve" in str(refused.json()["detail"])
    assert not Ticket.objects.exists()


def _due(client, url: str) -> Ticket:
    now = timezone.now()
    return ticket_make(
        client, status=Status.RESOLVED, reply="r", resolved_at=now, callback_due_at=now, callback_url=url
    )


def test_a_callback_whose_name_fails_for_now_is_tried_again_not_abandoned(dns_server, api, settings) -> None:
    settings.PIPELINE = {**settings.PIPELINE, "CALLBACK_MAX_ATTEMPTS": 5}
    _, client = api()
    temporary, missing = _due(client, "https://cb.fail.test/hook"), _due(client, "https://nowhere.test/hook")

    assert callbacks_drain() == 0

    temporary.refresh_from_db()
    missing.refresh_from_db()
    assert temporary.callback_due_at is not None  # due again after a backoff
    assert CallbackDelivery.objects.get(ticket=temporary).status == DeliveryStatus.FAILED
    assert missing.callback_due_at is None  # the name does not exist: given up


def test_a_downstream_webhook_whose_name_fails_for_now_is_a_temporary_error(dns_server) -> None:
    with pytest.raises(ToolError) as temporary:
        tool_webhook({"url": "https://hook.fail.test/"}, "key-1")
    with pytest.raises(ToolError) as missing:
        tool_webhook({"url": "https://nowhere.test/"}, "key-2")

    assert not temporary.value.permanent
    assert missing.value.permanent
