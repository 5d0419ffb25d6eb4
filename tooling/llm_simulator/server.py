"""The Messages API simulator: routes, state, and the in-process starter.

``Simulator`` is the asyncio application (use it inside a running event
loop); ``start_simulator(...)`` runs one in a background thread with its own
event loop and returns a ``SimulatorHandle``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import string
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .config import SimulatorConfig, normalize_fault_kind
from .httpserver import HTTPServer, Request, Response
from .ratelimit import RateLimiter
from .responder import (
    InvalidRequest,
    Reply,
    cache_breakpoints,
    count_input_tokens,
    last_user_text,
    parse_markers,
    prompt_segments,
    simulate_reply,
    validate_message_params,
)

log = logging.getLogger(__name__)

_B62 = string.ascii_letters + string.digits
_CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

ERROR_FAULTS = {
    "529": ("overloaded_error", "Overloaded"),
    "500": ("api_error", "Internal server error"),
    "502": ("api_error", "Bad gateway"),
    "503": ("api_error", "Service unavailable"),
    "504": ("timeout_error", "Request timed out"),
}

SPEND_LIMIT_MESSAGE = "You have reached your specified API usage limits. You will regain access on {date} at 00:00 UTC."


def _rand_id(prefix: str, n: int = 24) -> str:
    v = int.from_bytes(os.urandom(18), "big")
    out = []
    for _ in range(n):
        v, r = divmod(v, 62)
        out.append(_B62[r])
    return prefix + "".join(out)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.by_endpoint: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.by_status: dict[str, int] = defaultdict(int)
        self.faults: dict[str, int] = defaultdict(int)
        self.requests_total = 0
        self.rate_limited = 0
        self.rate_limited_by: dict[str, int] = defaultdict(int)
        self.spend_limited = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_creation_input_tokens = 0
        self.cache_read_input_tokens = 0
        self.batches_created = 0
        self.batch_requests = 0
        self.messages_ok = 0

    def record(self, endpoint: str, status: int) -> None:
        self.by_endpoint[endpoint][str(status)] += 1
        self.by_status[str(status)] += 1


@dataclass
class _Batch:
    id: str
    created: float
    requests: list[dict[str, Any]]
    status: str = "in_progress"
    ended: float | None = None
    cancel_initiated: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    results: list[bytes] = field(default_factory=list)
    task: asyncio.Task | None = None
    results_base: str = ""

    def to_dict(self) -> dict[str, Any]:
        n = len(self.requests)
        counts = (
            self.counts
            if self.status == "ended"
            else {"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        )
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": counts,
            "ended_at": _iso(self.ended) if self.ended else None,
            "created_at": _iso(self.created),
            "expires_at": _iso(self.created + 86400),
            "archived_at": None,
            "cancel_initiated_at": _iso(self.cancel_initiated) if self.cancel_initiated else None,
            "results_url": (
                f"{self.results_base}/v1/messages/batches/{self.id}/results" if self.status == "ended" else None
            ),
        }


class Simulator:
    """The simulator application. Create, then ``await start()`` in a loop."""

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **overrides: Any
    ):
        base = config if config is not None else SimulatorConfig()
        self.initial_config = base.updated(overrides) if overrides else base.updated({})
        self.host = host
        self.http = HTTPServer(self._dispatch, host, port)
        self._apply_config(self.initial_config.updated({}), fresh=True)  # a copy: fault_script is consumed
        self._clear_state()

    # ------------------------------------------------------------------ setup
    def _apply_config(self, cfg: SimulatorConfig, fresh: bool = False) -> None:
        old = getattr(self, "config", None)
        self.config = cfg
        if fresh or old is None or (old.rpm, old.itpm, old.otpm) != (cfg.rpm, cfg.itpm, cfg.otpm):
            self.limiter = RateLimiter(cfg.rpm, cfg.itpm, cfg.otpm)
        if fresh or old is None or old.seed != cfg.seed:
            self._seed_rngs(cfg.seed)

    def _seed_rngs(self, seed: int) -> None:
        self.fault_rng = random.Random(f"faults:{seed}")
        self.latency_rng = random.Random(f"latency:{seed}")
        self.batch_rng = random.Random(f"batch:{seed}")

    def _clear_state(self) -> None:
        self.stats = _Stats()
        self.cache: dict[str, float] = {}
        self.batches: OrderedDict[str, _Batch] = OrderedDict()
        self.accepted_messages = 0

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def base_url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> int:
        _raise_nofile_limit()
        return await self.http.start()

    async def stop(self) -> None:
        for b in self.batches.values():
            if b.task is not None and not b.task.done():
                b.task.cancel()
        await self.http.stop()

    # --------------------------------------------------------------- control
    def configure(self, **changes: Any) -> dict[str, Any]:
        self._apply_config(self.config.updated(changes))
        return self.config.to_dict()

    def reset(self, keep_config: bool = False) -> None:
        for b in self.batches.values():
            if b.task is not None and not b.task.done():
                b.task.cancel()
        cfg = self.config if keep_config else self.initial_config.updated({})
        self._apply_config(cfg, fresh=True)
        self._clear_state()

    def snapshot_stats(self) -> dict[str, Any]:
        s = self.stats
        return {
            "uptime_s": round(time.time() - s.started, 3),
            "requests_total": s.requests_total,
            "by_endpoint": {k: dict(v) for k, v in s.by_endpoint.items()},
            "by_status": dict(s.by_status),
            "rate_limited": s.rate_limited,
            "rate_limited_by": dict(s.rate_limited_by),
            "spend_limited": s.spend_limited,
            "faults": dict(s.faults),
            "in_flight": s.in_flight,
            "max_in_flight": s.max_in_flight,
            "open_connections": self.http.open_connections,
            "max_open_connections": self.http.max_open_connections,
            "total_connections": self.http.total_connections,
            "messages_ok": s.messages_ok,
            "tokens": {
                "input": s.input_tokens,
                "output": s.output_tokens,
                "cache_creation_input": s.cache_creation_input_tokens,
                "cache_read_input": s.cache_read_input_tokens,
            },
            "batches_created": s.batches_created,
            "batch_requests": s.batch_requests,
            "cache_entries": len(self.cache),
        }

    # -------------------------------------------------------------- dispatch
    async def _dispatch(self, req: Request) -> Response:
        if req.path.startswith("/_sim/") or req.path == "/healthz":
            # The control surface is not counted in the stats it reports.
            request_id = _rand_id("req_011C", 20)
            endpoint, handler, args = self._route(req)
            try:
                if handler is None:
                    resp = self._error(404, "not_found_error", f"Not found: {req.method} {req.path}", request_id)
                else:
                    resp = await handler(req, request_id, *args)
            except InvalidRequest as e:
                resp = self._error(e.status, e.error_type, e.message, request_id)
            return self._add_headers(resp, request_id)
        s = self.stats
        s.requests_total += 1
        s.in_flight += 1
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        request_id = _rand_id("req_011C", 20)
        endpoint = f"{req.method} {req.path}"
        try:
            endpoint, handler, args = self._route(req)
            if handler is None:
                resp = self._error(404, "not_found_error", f"Not found: {req.method} {req.path}", request_id)
            else:
                if endpoint.startswith(("POST /v1", "GET /v1", "DELETE /v1")) and self.config.require_api_key:
                    if not req.headers.get("x-api-key") and not req.headers.get("authorization"):
                        resp = self._error(401, "authentication_error", "x-api-key header is required", request_id)
                        return self._finish(resp, endpoint, request_id)
                    if not req.headers.get("anthropic-version"):
                        resp = self._error(
                            400, "invalid_request_error", "anthropic-version: header is required", request_id
                        )
                        return self._finish(resp, endpoint, request_id)
                try:
                    resp = await handler(req, request_id, *args)
                except InvalidRequest as e:
                    if self.config.error_latency:
                        await asyncio.sleep(self.config.error_latency)
                    resp = self._error(e.status, e.error_type, e.message, request_id)
            return self._finish(resp, endpoint, request_id)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # pragma: no cover - defensive
            log.exception("simulator handler failed")
            return self._finish(
                self._error(500, "api_error", f"simulator bug: {e!r}", request_id), endpoint, request_id
            )
        finally:
            s.in_flight -= 1

    def _finish(self, resp: Response, endpoint: str, request_id: str) -> Response:
        status = resp.status if resp.action is None else 0
        self.stats.record(endpoint, status if status else (599 if resp.action == "close" else 598))
        return self._add_headers(resp, request_id)

    def _add_headers(self, resp: Response, request_id: str) -> Response:
        if resp.action is None:
            hdrs = [
                ("request-id", request_id),
                ("anthropic-organization-id", self.config.organization_id),
                ("date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
                ("server", "anthropic-simulator"),
            ]
            hdrs.extend(self.limiter.headers().items())
            names = {k.lower() for k, _ in resp.headers}
            resp.headers = [h for h in hdrs if h[0] not in names] + resp.headers
        return resp

    def _route(self, req: Request):
        p = req.path.rstrip("/") or "/"
        m = req.method
        if p == "/v1/messages" and m == "POST":
            return "POST /v1/messages", self._messages, ()
        if p == "/v1/messages/count_tokens" and m == "POST":
            return "POST /v1/messages/count_tokens", self._count_tokens, ()
        if p == "/v1/messages/batches":
            if m == "POST":
                return "POST /v1/messages/batches", self._batch_create, ()
            if m == "GET":
                return "GET /v1/messages/batches", self._batch_list, ()
        mb = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results|/cancel)?", p)
        if mb:
            bid, tail = mb.group(1), mb.group(2)
            if tail is None and m == "GET":
                return "GET /v1/messages/batches/{id}", self._batch_retrieve, (bid,)
            if tail is None and m == "DELETE":
                return "DELETE /v1/messages/batches/{id}", self._batch_delete, (bid,)
            if tail == "/results" and m == "GET":
                return "GET /v1/messages/batches/{id}/results", self._batch_results, (bid,)
            if tail == "/cancel" and m == "POST":
                return "POST /v1/messages/batches/{id}/cancel", self._batch_cancel, (bid,)
        if p == "/_sim/stats" and m == "GET":
            return "GET /_sim/stats", self._sim_stats, ()
        if p == "/_sim/config" and m in ("GET", "POST"):
            return f"{m} /_sim/config", self._sim_config, ()
        if p == "/_sim/reset" and m == "POST":
            return "POST /_sim/reset", self._sim_reset, ()
        if p in ("/_sim/health", "/healthz") and m == "GET":
            return "GET /_sim/health", self._sim_health, ()
        return f"{m} {p}", None, ()

    # ------------------------------------------------------------- helpers
    def _error(
        self,
        status: int,
        etype: str,
        message: str,
        request_id: str,
        headers: list[tuple[str, str]] | None = None,
        details: dict[str, Any] | None = None,
    ) -> Response:
        err: dict[str, Any] = {"type": etype, "message": message}
        if details:
            err["details"] = details
        body = {"type": "error", "error": err, "request_id": request_id}
        return Response(
            status=status, body=_json(body), headers=[("content-type", "application/json")] + list(headers or [])
        )

    def _ok(self, obj: Any, status: int = 200) -> Response:
        return Response(status=status, body=_json(obj), headers=[("content-type", "application/json")])

    @staticmethod
    def _body(req: Request) -> Any:
        if not req.body:
            raise InvalidRequest("There was an issue with your request body: it is empty; expected a JSON object")
        try:
            return json.loads(req.body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("There was an issue with your request body: it is not valid JSON") from None

    def _draw_fault(self, markers: dict[str, str], rng: random.Random) -> str | None:
        r = rng.random()  # always drawn, so the sequence does not depend on markers/scripts
        kind: str | None = None
        if "fault" in markers:
            v = markers["fault"].strip().lower()
            if v not in ("ok", "none", "-"):
                try:
                    kind = normalize_fault_kind(v)
                except ValueError:
                    kind = None
        elif self.config.fault_script:
            v = self.config.fault_script.pop(0)
            kind = None if v == "ok" else v
        else:
            acc = 0.0
            for k in sorted(self.config.fault_rates):
                acc += self.config.fault_rates[k]
                if r < acc:
                    kind = k
                    break
        return kind

    def _cache_lookup(self, params: dict[str, Any], segments=None):
        """(read_tokens, creation_tokens, creation_by_ttl, breakpoints_to_store, hits)."""
        now = time.monotonic()
        bps = cache_breakpoints(params, ttl_override=self.config.cache_ttl, segments=segments)
        bps = [b for b in bps if b.tokens >= self.config.cache_min_tokens]
        if not bps:
            return 0, 0, {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}, [], []
        read = 0
        hits = []
        for b in bps:
            exp = self.cache.get(b.key)
            if exp is not None and exp > now:
                read = max(read, b.tokens)
                hits.append(b)
        last = bps[-1]
        create = max(0, last.tokens - read)
        by_ttl = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
        if create:
            by_ttl["ephemeral_1h_input_tokens" if last.ttl_class == "1h" else "ephemeral_5m_input_tokens"] = create
        return read, create, by_ttl, [b for b in bps if b.tokens > read], hits

    def _cache_commit(self, store, hits) -> None:
        now = time.monotonic()
        for b in list(store) + list(hits):
            self.cache[b.key] = now + b.ttl
        if len(self.cache) > 100_000:  # drop expired entries now and then
            self.cache = {k: v for k, v in self.cache.items() if v > now}

    def _usage(
        self,
        total_in: int,
        read: int,
        create: int,
        by_ttl: dict[str, int],
        output_tokens: int,
        service_tier: str = "standard",
    ) -> dict[str, Any]:
        return {
            "input_tokens": max(0, total_in - read - create),
            "cache_creation_input_tokens": create,
            "cache_read_input_tokens": read,
            "cache_creation": dict(by_ttl),
            "output_tokens": output_tokens,
            "service_tier": service_tier,
            "server_tool_use": None,
        }

    def _build_message(self, params: dict[str, Any], reply: Reply, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": _rand_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": reply.content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": reply.stop_sequence,
            "stop_details": reply.stop_details,
            "usage": usage,
        }

    # ------------------------------------------------------------ messages
    async def _messages(self, req: Request, request_id: str) -> Response:
        cfg = self.config
        params = validate_message_params(self._body(req))
        markers, _ = parse_markers(last_user_text(params))
        segments = prompt_segments(params)
        total_in = count_input_tokens(params, segments)
        read, create, by_ttl, store, hits = self._cache_lookup(params, segments)

        if cfg.spend_limit_after is not None and self.accepted_messages >= cfg.spend_limit_after:
            self.stats.spend_limited += 1
            if cfg.error_latency:
                await asyncio.sleep(cfg.error_latency)
            day = (datetime.now(UTC).replace(day=1) + timedelta(days=32)).replace(day=1)
            return self._error(
                429,
                "rate_limit_error",
                SPEND_LIMIT_MESSAGE.format(date=day.strftime("%Y-%m-%d")),
                request_id,
                headers=[("x-should-retry", "false")],
                details={"error_code": "enforced_spend_limit_reached"},
            )

        limited = self.limiter.check(total_in - read)
        if limited is not None:
            dim, wait = limited
            self.stats.rate_limited += 1
            self.stats.rate_limited_by[dim] += 1
            if cfg.error_latency:
                await asyncio.sleep(cfg.error_latency)
            limit = {"requests": cfg.rpm, "input_tokens": cfg.itpm, "output_tokens": cfg.otpm}[dim]
            unit = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}[dim]
            msg = (
                f"This request would exceed your organization's rate limit of {limit} {unit} per minute "
                f"(model: {params['model']}). For details, refer to: "
                "https://docs.claude.com/en/api/rate-limits. You can see the response headers for current "
                "usage. Please reduce the prompt length or the maximum tokens requested, or try again later."
            )
            retry_after = max(1, int(wait + 0.999))
            return self._error(429, "rate_limit_error", msg, request_id, headers=[("retry-after", str(retry_after))])

        self.accepted_messages += 1
        fault = self._draw_fault(markers, self.fault_rng)
        if fault is not None:
            self.stats.faults[fault] += 1
        if fault in ERROR_FAULTS:
            if cfg.error_latency:
                await asyncio.sleep(cfg.error_latency)
            etype, msg = ERROR_FAULTS[fault]
            return self._error(int(fault), etype, msg, request_id)

        reply = simulate_reply(params, fault=fault if fault in ("truncated", "refusal") else None)
        latency = self._latency(markers, reply.output_tokens)

        if fault == "timeout":
            return Response(action="hang", hang_seconds=cfg.hang_seconds)
        if fault == "disconnect":
            await asyncio.sleep(min(latency, cfg.hang_seconds))
            return Response(action="close")

        self._cache_commit(store, hits)
        self.limiter.charge_output(reply.output_tokens)
        usage = self._usage(total_in, read, create, by_ttl, reply.output_tokens)
        st = self.stats
        st.input_tokens += usage["input_tokens"]
        st.output_tokens += reply.output_tokens
        st.cache_creation_input_tokens += create
        st.cache_read_input_tokens += read
        message = self._build_message(params, reply, usage)

        if params.get("stream"):
            st.messages_ok += 1
            return Response(
                status=200,
                headers=[("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")],
                stream=self._sse(message, latency, fault == "malformed"),
            )
        if latency > 0:
            await asyncio.sleep(latency)
        body = _json(message)
        if fault == "malformed":
            body = body[: max(1, len(body) // 2)]
        st.messages_ok += 1
        return Response(status=200, body=body, headers=[("content-type", "application/json")])

    def _latency(self, markers: dict[str, str], output_tokens: int) -> float:
        sample = self.config.latency.sample(self.latency_rng, output_tokens)  # always drawn
        if "latency" in markers:
            try:
                return max(0.0, float(markers["latency"]))
            except ValueError:
                pass
        return sample

    async def _sse(self, message: dict[str, Any], latency: float, malformed: bool) -> AsyncIterator[bytes]:
        def ev(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + _json(data) + b"\n\n"

        usage = message["usage"]
        per_token = self.config.latency.per_token
        first = max(0.0, latency - per_token * usage["output_tokens"])
        start = dict(
            message,
            content=[],
            stop_reason=None,
            stop_sequence=None,
            stop_details=None,
            usage=dict(usage, output_tokens=1),
        )
        if first > 0:
            await asyncio.sleep(first)
        yield ev("message_start", {"type": "message_start", "message": start})
        yield ev("ping", {"type": "ping"})
        for i, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield ev(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                )
                text = block["text"]
                step = 40
                for j in range(0, len(text), step):
                    piece = text[j : j + step]
                    if per_token:
                        await asyncio.sleep(per_token * max(1, len(piece) // 4))
                    if malformed and j >= len(text) // 2:
                        yield b'event: content_block_delta\ndata: {"type":"content_block_delta","ind\n\n'
                        return
                    yield ev(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}},
                    )
            elif block["type"] == "tool_use":
                yield ev(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": dict(block, input={})},
                )
                yield ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    },
                )
            yield ev("content_block_stop", {"type": "content_block_stop", "index": i})
        yield ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                    "stop_details": message["stop_details"],
                },
                "usage": {
                    "output_tokens": usage["output_tokens"],
                    "input_tokens": usage["input_tokens"],
                    "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                    "cache_read_input_tokens": usage["cache_read_input_tokens"],
                },
            },
        )
        yield ev("message_stop", {"type": "message_stop"})

    async def _count_tokens(self, req: Request, request_id: str) -> Response:
        params = validate_message_params(self._body(req), count_tokens=True)
        return self._ok({"input_tokens": count_input_tokens(params)})

    # -------------------------------------------------------------- batches
    def _results_base(self, req: Request) -> str:
        host = req.headers.get("host") or f"{self.host}:{self.port}"
        return f"http://{host}"

    async def _batch_create(self, req: Request, request_id: str) -> Response:
        body = self._body(req)
        if not isinstance(body, dict) or "requests" not in body:
            raise InvalidRequest("requests: Field required")
        extra = set(body) - {"requests"}
        if extra:
            raise InvalidRequest(f"{sorted(extra)[0]}: Extra inputs are not permitted")
        reqs = body["requests"]
        if not isinstance(reqs, list) or not reqs:
            raise InvalidRequest("requests: List should have at least 1 item")
        if len(reqs) > 100_000:
            raise InvalidRequest("requests: List should have at most 100000 items")
        seen = set()
        for i, r in enumerate(reqs):
            if not isinstance(r, dict):
                raise InvalidRequest(f"requests.{i}: Input should be a valid dictionary")
            cid = r.get("custom_id")
            if not isinstance(cid, str) or not _CUSTOM_ID_RE.match(cid):
                raise InvalidRequest(f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if cid in seen:
                raise InvalidRequest(f"requests.{i}.custom_id: Duplicate custom_id {cid!r}")
            seen.add(cid)
            if not isinstance(r.get("params"), dict):
                raise InvalidRequest(f"requests.{i}.params: Field required")
        b = _Batch(
            id=_rand_id("msgbatch_01", 22), created=time.time(), requests=reqs, results_base=self._results_base(req)
        )
        self.batches[b.id] = b
        self.batches.move_to_end(b.id, last=False)  # most recent first
        self.stats.batches_created += 1
        self.stats.batch_requests += len(reqs)
        b.task = asyncio.get_running_loop().create_task(self._batch_run(b))
        return self._ok(b.to_dict())

    async def _batch_run(self, b: _Batch) -> None:
        try:
            await asyncio.sleep(self.config.batch_delay)
        except asyncio.CancelledError:
            return
        self._batch_finish(b)

    def _batch_finish(self, b: _Batch) -> None:
        if b.status == "ended":
            return
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        lines: list[bytes] = []
        for r in b.requests:
            cid = r["custom_id"]
            if b.status == "canceling":
                result: dict[str, Any] = {"type": "canceled"}
            else:
                result = self._batch_item(r["params"])
            counts[result["type"]] += 1
            lines.append(_json({"custom_id": cid, "result": result}) + b"\n")
        b.counts = counts
        b.results = lines
        b.status = "ended"
        b.ended = time.time()

    def _batch_item(self, params: Any) -> dict[str, Any]:
        rid = _rand_id("req_011C", 20)

        def errored(etype: str, msg: str) -> dict[str, Any]:
            return {
                "type": "errored",
                "error": {"type": "error", "error": {"type": etype, "message": msg}, "request_id": rid},
            }

        try:
            if isinstance(params, dict) and params.get("stream"):
                raise InvalidRequest("stream: Streaming is not supported in the Message Batches API")
            params = validate_message_params(params)
        except InvalidRequest as e:
            return errored(e.error_type, e.message)
        markers, _ = parse_markers(last_user_text(params))
        fault = self._draw_fault(markers, self.batch_rng)
        if fault is not None:
            self.stats.faults["batch:" + fault] += 1
        if fault in ERROR_FAULTS:
            return errored(*ERROR_FAULTS[fault])
        if fault in ("timeout", "disconnect"):
            return errored("api_error", "Internal server error")
        total_in = count_input_tokens(params)
        read, create, by_ttl, store, hits = self._cache_lookup(params)
        reply = simulate_reply(params, fault=fault if fault in ("truncated", "refusal") else None)
        self._cache_commit(store, hits)
        usage = self._usage(total_in, read, create, by_ttl, reply.output_tokens, service_tier="batch")
        st = self.stats
        st.input_tokens += usage["input_tokens"]
        st.output_tokens += reply.output_tokens
        st.cache_creation_input_tokens += create
        st.cache_read_input_tokens += read
        return {"type": "succeeded", "message": self._build_message(params, reply, usage)}

    def _get_batch(self, bid: str) -> _Batch:
        b = self.batches.get(bid)
        if b is None:
            raise InvalidRequest(f"No message batch found with id {bid!r}", status=404, error_type="not_found_error")
        return b

    async def _batch_retrieve(self, req: Request, request_id: str, bid: str) -> Response:
        return self._ok(self._get_batch(bid).to_dict())

    async def _batch_list(self, req: Request, request_id: str) -> Response:
        try:
            limit = int(req.query.get("limit", 20))
        except ValueError:
            raise InvalidRequest("limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit: Input should be between 1 and 1000")
        ids = list(self.batches)  # most recent first
        after, before = req.query.get("after_id"), req.query.get("before_id")
        if after:
            ids = ids[ids.index(after) + 1 :] if after in ids else []
            page = ids[:limit]
            has_more = len(ids) > limit
        elif before:
            ids = ids[: ids.index(before)] if before in ids else []
            page = ids[-limit:]
            has_more = len(ids) > limit
        else:
            page = ids[:limit]
            has_more = len(ids) > limit
        data = [self.batches[i].to_dict() for i in page]
        return self._ok(
            {
                "data": data,
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def _batch_cancel(self, req: Request, request_id: str, bid: str) -> Response:
        b = self._get_batch(bid)
        if b.status == "in_progress":
            b.status = "canceling"
            b.cancel_initiated = time.time()
            if b.task is not None:
                b.task.cancel()

            async def finish_soon() -> None:
                await asyncio.sleep(min(0.05, self.config.batch_delay))
                self._batch_finish(b)

            b.task = asyncio.get_running_loop().create_task(finish_soon())
        return self._ok(b.to_dict())

    async def _batch_delete(self, req: Request, request_id: str, bid: str) -> Response:
        b = self._get_batch(bid)
        if b.status != "ended":
            raise InvalidRequest("Batch must be ended (or canceled) before it can be deleted")
        del self.batches[bid]
        return self._ok({"id": bid, "type": "message_batch_deleted"})

    async def _batch_results(self, req: Request, request_id: str, bid: str) -> Response:
        b = self._get_batch(bid)
        if b.status != "ended":
            raise InvalidRequest(f"Batch {bid} is still {b.status}; results are available once it has ended")
        return Response(status=200, body=b"".join(b.results), headers=[("content-type", "application/binary")])

    # -------------------------------------------------------------- control
    async def _sim_stats(self, req: Request, request_id: str) -> Response:
        return self._ok(self.snapshot_stats())

    async def _sim_config(self, req: Request, request_id: str) -> Response:
        if req.method == "POST":
            changes = self._body(req)
            if not isinstance(changes, dict):
                raise InvalidRequest("config: expected a JSON object")
            try:
                self.configure(**changes)
            except (ValueError, TypeError) as e:
                raise InvalidRequest(str(e)) from e
        return self._ok(self.config.to_dict())

    async def _sim_reset(self, req: Request, request_id: str) -> Response:
        keep = False
        if req.body:
            body = self._body(req)
            keep = bool(isinstance(body, dict) and body.get("keep_config"))
        self.reset(keep_config=keep)
        return self._ok({"ok": True, "config": self.config.to_dict()})

    async def _sim_health(self, req: Request, request_id: str) -> Response:
        return self._ok({"ok": True})


def _raise_nofile_limit() -> None:
    """Allow as many open sockets as the hard limit permits (best effort)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except Exception:
        pass


# ---------------------------------------------------------------- threading
class SimulatorHandle:
    """A simulator running in a background thread with its own event loop."""

    def __init__(self, sim: Simulator, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.simulator = sim
        self._loop = loop
        self._thread = thread
        self._stopped = False

    @property
    def host(self) -> str:
        return self.simulator.host

    @property
    def port(self) -> int:
        return self.simulator.port

    @property
    def base_url(self) -> str:
        return self.simulator.base_url

    def _call(self, fn, *args, **kwargs):
        async def run():
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def stats(self) -> dict[str, Any]:
        return self._call(self.simulator.snapshot_stats)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change config at run time (same keys as start_simulator)."""
        return self._call(self.simulator.configure, **changes)

    @property
    def config(self) -> dict[str, Any]:
        return self._call(lambda: self.simulator.config.to_dict())

    def reset(self, keep_config: bool = False) -> None:
        self._call(self.simulator.reset, keep_config)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            asyncio.run_coroutine_threadsafe(self.simulator.stop(), self._loop).result(timeout=15)
        except Exception:  # pragma: no cover
            log.exception("error while stopping the simulator")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SimulatorHandle {self.base_url}>"


def start_simulator(
    port: int = 0, host: str = "127.0.0.1", config: SimulatorConfig | None = None, **overrides: Any
) -> SimulatorHandle:
    """Start a simulator in a background thread and return once it listens.

    ``port=0`` binds a free port (see ``handle.port`` / ``handle.base_url``).
    Keyword arguments are SimulatorConfig fields (rpm, itpm, otpm, latency,
    fault_rates / fault_rate, fault_script, seed, batch_delay, ...), plus
    latency_min / latency_median / latency_max / latency_p99.
    """
    sim = Simulator(config, host=host, port=port, **overrides)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start())
        except BaseException as e:  # pragma: no cover - e.g. port in use
            failure.append(e)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=run, name="anthropic-simulator", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if failure:
        raise failure[0]
    if not ready.is_set():  # pragma: no cover
        raise RuntimeError("simulator did not start within 30 s")
    return SimulatorHandle(sim, loop, thread)


async def serve_forever(
    host: str = "127.0.0.1", port: int = 8765, config: SimulatorConfig | None = None, ready_cb=None
) -> None:
    """Run a simulator in the current event loop until cancelled (used by the CLI)."""
    sim = Simulator(config, host=host, port=port)
    await sim.start()
    if ready_cb is not None:
        ready_cb(sim)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
