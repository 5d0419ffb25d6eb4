"""Outbound calls cannot reach the operator's network: refused at submit, and again at delivery on
the address actually connected to (issue #13). Only loopback servers receive traffic here: every
refusal is asserted without connecting anywhere."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from ipaddress import ip_address
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from project.netguard import (
    BlockedURL,
    IPAddress,
    OutboundBlocked,
    ResponseTooLarge,
    check_url,
    guarded_client,
)

# Names in the corpus resolve through this table (no DNS here, and none wanted).
NAMES = {
    "localhost": ["127.0.0.1", "::1"],
    "metadata.google.internal": ["169.254.169.254"],
    "intranet.example": ["10.1.2.3"],
    "six.example": ["fd12:3456::1"],
    "cgnat.example": ["100.64.0.7"],
    "mixed.example": ["93.184.215.14", "192.168.0.10"],  # one private address is enough
    "xn--bcher-kva.example": ["127.0.0.1"],  # bücher.example
    "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
}


def table(names: dict[str, list[str]]) -> Callable[[str, int, float], Sequence[IPAddress]]:
    def resolve(host: str, port: int, timeout: float) -> Sequence[IPAddress]:
        try:
            return [ip_address(a) for a in names[host]]
        except KeyError:
            raise BlockedURL(f"{host} does not resolve") from None

    return resolve


REFUSED = [
    # loopback, every spelling
    "http://127.0.0.1:6379/",
    "http://localhost:5555/api/",
    "http://LOCALHOST./",
    "http://127.0.0.1./",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0x7f.1/",
    "http://017700000001/",
    "http://127.1/",
    "http://127.000.000.001/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[0:0:0:0:0:ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://bücher.example/",
    # unspecified, private, link-local, unique-local, site-local, multicast, reserved, CGNAT
    "http://0/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.1.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://100.64.0.1/",
    "http://192.0.0.8/",
    "http://198.18.0.1/",
    "http://[64:ff9b:1::a00:1]/",
    # metadata endpoints
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://168.63.129.16/",
    "http://192.0.0.192/",
    "http://metadata.google.internal/computeMetadata/v1/",
    # names that resolve inside
    "http://intranet.example/",
    "https://six.example/",
    "https://cgnat.example/",
    "https://mixed.example/",
    # URL tricks
    "http://evil.example@127.0.0.1/",
    "http://public.example@127.0.0.1/",
    "http://127.0.0.1#@public.example/",
    "http://public.example\\@127.0.0.1/",
    "http://public.example:80@127.0.0.1/",
    "http://user:pass@public.example/",
    "http:///127.0.0.1/",
    "http://public.example /",
    "http://256.1.1.1/",
    "http://nowhere.example/",
    # schemes
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://public.example/",
    "javascript:alert(1)",
]


@pytest.fixture(autouse=True)
def nothing_allowed(settings) -> None:
    settings.CALLBACK_ALLOWED_HOSTS = ()
    settings.PRODUCTION = False


@pytest.mark.parametrize("url", REFUSED)
def test_a_url_into_the_operators_network_is_refused_at_submit_in_every_spelling(url: str) -> None:
    with pytest.raises(BlockedURL) as refused:
        check_url(url, resolver=table(NAMES))

    assert "does not resolve" not in str(refused.value) or "nowhere" in url, refused.value  # refused for a reason


@pytest.mark.parametrize(
    "url",
    [
        "https://public.example/hook",
        "https://93.184.215.14:8443/",
        "https://[2606:4700::1111]/",
        "http://[::ffff:8.8.8.8]/",
    ],
)
def test_a_public_address_is_accepted(url: str) -> None:
    check_url(url, resolver=table(NAMES))


def test_production_accepts_only_https(settings) -> None:
    settings.PRODUCTION = True

    with pytest.raises(BlockedURL, match="https"):
        check_url("http://public.example/hook", resolver=table(NAMES))
    check_url("https://public.example/hook", resolver=table(NAMES))


def test_the_allow_list_opens_a_host_and_only_on_its_port(settings) -> None:
    settings.CALLBACK_ALLOWED_HOSTS = "127.0.0.1:8080, hooks.internal"

    check_url("http://127.0.0.1:8080/hook")
    check_url("http://2130706433:8080/hook")  # the same address, spelt otherwise
    check_url("http://hooks.internal/any", resolver=table({}))  # by name: not resolved at submit
    with pytest.raises(BlockedURL):
        check_url("http://127.0.0.1:6379/")


def test_create_client_refuses_a_callback_url_into_the_operators_network(db) -> None:
    with pytest.raises(CommandError, match="169.254.169.254"):
        call_command("create_client", "sneaky", "--callback-url", "http://169.254.169.254/latest/meta-data/")


# --- delivery, against a real local server ----------------------------------------------------


class Server:
    """A loopback TCP server answering each request with `respond(conn)`; records what came in."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self.respond, self.requests = respond, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next((int(v) for k, _, v in self._headers(head) if k == "content-length"), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append({"head": head.decode(), "body": body})
            try:
                self.respond(conn)
            except OSError:
                pass

    @staticmethod
    def _headers(head: bytes) -> list[tuple[str, str, str]]:
        lines = head.decode().split("\r\n")[1:]
        return [(k.strip().lower(), ":", v.strip()) for k, _, v in (line.partition(":") for line in lines)]

    def close(self) -> None:
        self.sock.close()


def answer(status: str = "200 OK", body: bytes = b"{}", extra: str = "") -> Callable[[socket.socket], None]:
    def respond(conn: socket.socket) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
        conn.sendall(head.encode() + body)  # one request a connection: the server closes it

    return respond


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], Server]]:
    servers: list[Server] = []

    def make(respond: Callable[[socket.socket], None]) -> Server:
        servers.append(Server(respond))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_an_allowed_loopback_host_is_delivered_to(settings, serve) -> None:
    server = serve(answer())
    settings.CALLBACK_ALLOWED_HOSTS = f"127.0.0.1:{server.port}"

    response = guarded_client(timeout=5).post(f"http://127.0.0.1:{server.port}/hook", content=b'{"a": 1}')

    assert response.status_code == 200
    assert [r["body"] for r in server.requests] == [b'{"a": 1}']


def test_delivery_connects_to_the_checked_address_and_keeps_the_host_name(settings, serve) -> None:
    server = serve(answer())
    settings.CALLBACK_ALLOWED_HOSTS = "hooks.internal"
    client = guarded_client(timeout=5, resolver=table({"hooks.internal": ["127.0.0.1"]}))

    assert client.post(f"http://hooks.internal:{server.port}/hook", content=b"x").status_code == 200
    assert f"host: hooks.internal:{server.port}" in server.requests[0]["head"].lower()


def test_a_name_that_resolves_inside_by_delivery_time_is_refused_before_connecting(serve) -> None:
    server = serve(answer())
    url = f"http://rebind.example:{server.port}/hook"
    check_url(url, resolver=table({"rebind.example": ["93.184.215.14"]}))  # public when submitted

    client = guarded_client(timeout=5, resolver=table({"rebind.example": ["127.0.0.1"]}))
    with pytest.raises(OutboundBlocked, match="loopback"):
        client.post(url, content=b"x")

    assert server.requests == []


def test_an_address_spelt_otherwise_is_refused_at_delivery_too(serve) -> None:
    server = serve(answer())

    for host in ("127.0.0.1", "2130706433", "[::ffff:127.0.0.1]", "localhost"):
        with pytest.raises(OutboundBlocked):
            guarded_client(timeout=5).post(f"http://{host}:{server.port}/hook", content=b"x")

    assert server.requests == []


def test_a_redirect_is_not_followed(settings, serve) -> None:
    inside = serve(answer())
    hop = serve(answer("302 Found", b"", f"Location: http://127.0.0.1:{inside.port}/admin\r\n"))
    settings.CALLBACK_ALLOWED_HOSTS = f"127.0.0.1:{hop.port}"
    client = guarded_client(timeout=5)

    assert client.post(f"http://127.0.0.1:{hop.port}/hook", content=b"x").status_code == 302
    with pytest.raises(OutboundBlocked):  # and not even when a caller asks for it
        client.post(f"http://127.0.0.1:{hop.port}/hook", content=b"x", follow_redirects=True)
    assert inside.requests == []


def trickle(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        conn.sendall(b".")
        time.sleep(0.25)


def trickle_headers(conn: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
        conn.sendall(bytes([byte]))
        time.sleep(0.25)


@pytest.mark.parametrize("respond", [trickle, trickle_headers], ids=["body", "headers"])
def test_a_server_that_trickles_is_cut_at_the_whole_request_deadline(settings, serve, respond) -> None:
    server = serve(respond)
    settings.CALLBACK_ALLOWED_HOSTS = f"127.0.0.1:{server.port}"
    started = time.monotonic()

    with pytest.raises(httpx.TimeoutException):
        guarded_client(timeout=1.5).post(f"http://127.0.0.1:{server.port}/hook", content=b"x")

    assert time.monotonic() - started < 3  # each read was quick: per-read timeouts never fire


def test_an_oversized_answer_is_cut(settings, serve) -> None:
    def chunked(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(64):
            conn.sendall(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    declared, streamed = serve(answer(body=b"x" * 200_000)), serve(chunked)
    settings.CALLBACK_ALLOWED_HOSTS = "127.0.0.1"
    client = guarded_client(timeout=5, max_response_bytes=64 * 1024)

    for server in (declared, streamed):
        with pytest.raises(ResponseTooLarge):
            client.post(f"http://127.0.0.1:{server.port}/hook", content=b"x")


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate (and key) for hooks.internal."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    pem = tmp_path / "hooks.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hooks.internal"]
        + ["-addext", "subjectAltName=DNS:hooks.internal", "-keyout", str(pem), "-out", str(pem)],
        check=True,
        capture_output=True,
    )
    return pem


def test_tls_goes_to_the_checked_address_with_the_names_sni_and_certificate(settings, certificate) -> None:
    names: list[str | None] = []
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certificate)
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)

    class TlsServer(Server):
        def _one(self, conn: socket.socket) -> None:
            try:
                wrapped = server_tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return
            super()._one(wrapped)

    server = TlsServer(answer())
    settings.CALLBACK_ALLOWED_HOSTS = "hooks.internal"
    client = guarded_client(
        timeout=5,
        resolver=table({"hooks.internal": ["127.0.0.1"]}),
        ssl_context=ssl.create_default_context(cafile=str(certificate)),
    )
    try:
        assert client.post(f"https://hooks.internal:{server.port}/hook", content=b"x").status_code == 200
    finally:
        server.close()

    assert names == ["hooks.internal"]
    assert f"host: hooks.internal:{server.port}" in server.requests[0]["head"].lower()
