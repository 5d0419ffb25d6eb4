"""A small asyncio HTTP/1.1 server with keep-alive.

Standard library only. Just enough HTTP for JSON APIs: Content-Length and
chunked request bodies, keep-alive, Content-Length or chunked responses
(chunked is used for streamed bodies such as server-sent events), and two
non-HTTP "responses" used for fault injection: dropping the connection, and
holding it silent until the client gives up.

One coroutine per connection, so thousands of slow concurrent requests cost
memory, not threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}

MAX_HEADER_BYTES = 1 << 16
MAX_BODY_BYTES = 64 << 20


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    peer: tuple[str, int] | None = None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A streamed body, sent with Transfer-Encoding: chunked.
    stream: AsyncIterator[bytes] | None = None
    # "close": drop the connection without responding;
    # "hang": send nothing, wait for the client to close (or hang_seconds), then close.
    action: str | None = None
    hang_seconds: float = 600.0


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HTTPServer:
    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        backlog: int = 4096,
        idle_timeout: float = 300.0,
    ):
        self.handler = handler
        self.host = host
        self.port = port
        self.backlog = backlog
        self.idle_timeout = idle_timeout
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.open_connections = 0
        self.max_open_connections = 0
        self.total_connections = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._on_connection,
            self.host,
            self.port,
            backlog=self.backlog,
            limit=MAX_HEADER_BYTES,
            reuse_address=True,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.close()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.open_connections += 1
        self.total_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:  # pragma: no cover - defensive
            log.exception("simulator connection handler failed")
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer) -> None:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=self.idle_timeout)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                await self._write_simple(
                    writer,
                    431,
                    b'{"type":"error","error":{"type":"invalid_request_error","message":"Request headers too large"}}',
                )
                return
            try:
                req, keep_alive = await self._parse(head, reader, writer, peer)
            except BadRequest as e:
                message = _json_str(str(e))
                body = f'{{"type":"error","error":{{"type":"invalid_request_error","message":{message}}}}}'.encode()
                await self._write_simple(writer, e.status, body)
                return
            resp = await self.handler(req)
            if resp.action == "close":
                _abort(writer)
                return
            if resp.action == "hang":
                await self._hang(reader, resp.hang_seconds)
                _abort(writer)
                return
            if not await self._write_response(writer, resp, keep_alive, req.method):
                return
            if not keep_alive:
                return

    async def _parse(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer):
        try:
            text = head.decode("latin-1")
        except Exception:
            raise BadRequest(400, "bad request head") from None
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise BadRequest(400, "bad request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            if ":" not in line:
                raise BadRequest(400, "bad header line")
            k, v = line.split(":", 1)
            k = k.strip().lower()
            v = v.strip()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        conn = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in conn
        else:
            keep_alive = "keep-alive" in conn
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            try:
                n = int(headers["content-length"])
            except ValueError:
                raise BadRequest(400, "bad content-length") from None
            if n < 0 or n > MAX_BODY_BYTES:
                raise BadRequest(413, "request body too large")
            body = await reader.readexactly(n) if n else b""
        else:
            body = b""
        split = urlsplit(target)
        path = unquote(split.path) or "/"
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        return Request(method.upper(), target, path, query, headers, body, peer), keep_alive

    async def _hang(self, reader: asyncio.StreamReader, seconds: float) -> None:
        async def until_eof() -> None:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return

        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(until_eof(), timeout=seconds)

    async def _write_simple(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        await self._write_response(
            writer, Response(status=status, body=body, headers=[("content-type", "application/json")]), False, "GET"
        )

    async def _write_response(
        self, writer: asyncio.StreamWriter, resp: Response, keep_alive: bool, method: str
    ) -> bool:
        if writer.is_closing():
            return False
        reason = REASONS.get(resp.status, "Unknown")
        out = [f"HTTP/1.1 {resp.status} {reason}\r\n"]
        for k, v in resp.headers:
            out.append(f"{k}: {v}\r\n")
        if resp.stream is not None:
            out.append("transfer-encoding: chunked\r\n")
        else:
            out.append(f"content-length: {len(resp.body)}\r\n")
        out.append("connection: keep-alive\r\n" if keep_alive else "connection: close\r\n")
        out.append("\r\n")
        head = "".join(out).encode("latin-1")
        try:
            if resp.stream is None:
                writer.write(head + (resp.body if method != "HEAD" else b""))
                await writer.drain()
            else:
                writer.write(head)
                async for chunk in resp.stream:
                    if chunk:
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        return True


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_s = line.split(b";", 1)[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            raise BadRequest(400, "bad chunk size") from None
        if size == 0:
            # trailers
            while True:
                t = await reader.readuntil(b"\r\n")
                if t == b"\r\n":
                    break
            return b"".join(chunks)
        total += size
        if total > MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    with contextlib.suppress(Exception):
        transport.abort()


def _json_str(s: str) -> str:
    import json

    return json.dumps(s)
