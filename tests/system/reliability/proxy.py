"""A pass-through proxy in front of the Messages API simulator that answers a share of the calls
429 itself (the simulator's own 429s come from rate-limit buckets, which do not give a steady
share): the simulator then injects 529, 500, timeouts and malformed JSON on the rest."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tooling.system import SimulatorProcess

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}
RATE_LIMITED = {
    "type": "error",
    "error": {
        "type": "rate_limit_error",
        "message": "Number of request tokens has exceeded your per-minute rate limit",
    },
}


class FaultProxy:
    """Listens on 127.0.0.1; `rate_429` of the POST /v1/messages calls get a 429 with retry-after."""

    def __init__(self, upstream: str, *, seed: int = 7) -> None:
        self.upstream = upstream.rstrip("/")
        self.rate_429 = 0.0
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=10.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()

    def _throttled(self, method: str, path: str) -> bool:
        with self._lock:
            hit = method == "POST" and path.startswith("/v1/messages") and self._rng.random() < self.rate_429
            self.counts["429" if hit else "forwarded"] += 1
            return hit

    def _forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        sent = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            response = self._http.request(method, self.upstream + path, headers=sent, content=body)
        except httpx.HTTPError:
            return 504, [("content-type", "application/json")], b'{"type":"error","error":{"type":"timeout"}}'
        kept = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP]
        return response.status_code, kept, response.content

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy._throttled(self.command, self.path):
                    status, headers, payload = 429, [("retry-after", "1")], json.dumps(RATE_LIMITED).encode()
                    headers.append(("content-type", "application/json"))
                else:
                    status, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                try:
                    self.send_response(status)
                    for key, value in headers:
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (a timeout fault): nothing to answer

            do_GET = do_POST = do_DELETE = _any  # noqa: N815 - the stdlib's names

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


@dataclass
class Claude:
    """Where the workers' Claude tier goes: the 429-injecting proxy in front of the simulator."""

    sim: SimulatorProcess
    proxy: FaultProxy

    @property
    def base_url(self) -> str:
        return self.proxy.base_url
