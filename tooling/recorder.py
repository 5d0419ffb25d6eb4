"""An HTTP receiver standing in for a client's callback endpoint or a downstream API.

It behaves as the product asks its partners to behave: a request is *applied* the first time its
`Idempotency-Key` arrives; a later request with the same key is answered 200 again but not applied
(a "re-send"). So the suite can tell apart a side effect performed twice (two keys for one effect,
or one key applied twice: never allowed) from an at-least-once re-send of one key (what a worker
killed between the call and its ledger write must do, and what the key exists for).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receipt:
    """One request as received: when, where, under which key, and whether it was applied."""

    at: float
    path: str
    key: str
    body: dict[str, Any]
    applied: bool
    status: int = 0
    answered: bool = False  # the response reached the socket (False: the caller died or gave up)


@dataclass
class Recorder:
    """A threaded HTTP server on 127.0.0.1; `down()` closes its port, `up()` reopens the same one."""

    name: str
    delay: float = 0.0  # seconds before answering: widens the window in which a caller can die
    refuse_paths: tuple[str, ...] = ("/refuse",)  # answered 422: a downstream that always says no
    fail_first: bool = False  # answer each key's first request 503 (not applied): a flaky partner
    # Paths under this prefix answer a byte at a time, `trickle_every` seconds apart: an endpoint
    # that holds a caller for minutes unless the caller keeps a deadline over the whole request.
    trickle_prefix: str = "/trickle"
    trickle_every: float = 2.0
    failed_once: set[str] = field(default_factory=set)
    receipts: list[Receipt] = field(default_factory=list)
    applied_keys: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _connections: set[socket.socket] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.up()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, name=f"recorder-{self.name}", daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut the open (keep-alive) connections: callers get 'connection
        refused' until `up()`, also those that had a connection pooled."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            connections, self._connections = set(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _receive(self, path: str, key: str, raw: bytes) -> Receipt:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw[:200].decode("utf-8", "replace")}
        with self.lock:
            refused = path in self.refuse_paths
            flaky = self.fail_first and key not in self.failed_once
            applied = not refused and not flaky and not (key and key in self.applied_keys)
            receipt = Receipt(at=time.time(), path=path, key=key, body=body, applied=applied)
            receipt.status = 422 if refused else 503 if flaky else 200
            if flaky:
                self.failed_once.add(key)
            if applied and key:
                self.applied_keys.add(key)
            self.receipts.append(receipt)
            self.in_flight += 1
        return receipt

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with recorder.lock:
                    recorder._connections.add(self.connection)

            def finish(self) -> None:
                with recorder.lock:
                    recorder._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receipt = recorder._receive(self.path, self.headers.get("Idempotency-Key", ""), raw)
                try:
                    if self.path.startswith(recorder.trickle_prefix):
                        self._trickle()
                        return
                    if recorder.delay:
                        time.sleep(recorder.delay)
                    payload = json.dumps({"applied": receipt.applied}).encode()
                    self.send_response(receipt.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    self.wfile.flush()
                    receipt.answered = True
                except OSError:
                    pass
                finally:
                    with recorder.lock:
                        recorder.in_flight -= 1

            def _trickle(self) -> None:
                payload = b'{"ok": true, "padding": "' + b"." * 40 + b'"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                for byte in payload:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(recorder.trickle_every)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    # --- what the suite asks -------------------------------------------------------------------
    def snapshot(self) -> list[Receipt]:
        with self.lock:
            return list(self.receipts)

    def applied_twice(self) -> int:
        """Keys applied more than once: must be 0 by construction; checked so a bug here shows."""
        counts = Counter(r.key for r in self.snapshot() if r.applied)
        return sum(1 for n in counts.values() if n > 1)

    def resent(self) -> int:
        """Receipts of a key already received (at-least-once re-sends, dropped by the key)."""
        receipts = [r for r in self.snapshot() if r.key]
        return len(receipts) - len({r.key for r in receipts})

    def wait_in_flight(self, timeout: float) -> bool:
        """Wait until a caller is blocked inside a request to this receiver."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.in_flight:
                return True
            time.sleep(0.01)
        return False
