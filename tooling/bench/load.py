"""Offering tickets over HTTP (aiohttp, asyncio): closed-loop (N in flight) or open-loop (at a rate).

Closed loop: `concurrency` users each submit a ticket, wait until it is terminal, and submit the
next — the system's sustained rate with bounded queues. Open loop: arrivals at `rate` per second
(Poisson, seeded), each sent at its scheduled time whatever happened to the previous ones, and the
API latency is taken from that scheduled time, so a slow API is not hidden by a slower client.
Terminal states are read from Postgres by one poller (`Watcher`), never by polling the API.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg

TERMINAL = ("resolved", "awaiting_review", "dead_lettered")


@dataclass
class Sent:
    """One POST: when it was due, when it was answered, what came back."""

    due: float
    answered: float = 0.0
    status: int = 0
    ticket_id: str = ""
    category: str = ""
    error: str = ""


@dataclass
class Counters:
    """Live figures for the progress line."""

    sent: int = 0
    accepted: int = 0
    failed: int = 0
    terminal: int = 0
    in_flight: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Watcher:
    """Finds which of the tickets being waited for are terminal, one query every `period`."""

    def __init__(self, conninfo: str, counters: Counters, period: float = 0.02) -> None:
        self.conninfo, self.counters, self.period = conninfo, counters, period
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self.conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task:
            self._task.cancel()
        await self.conn.close()

    def wait(self, ticket_id: str) -> asyncio.Future[None]:
        future = self.waiting.get(ticket_id)
        if future is None:
            future = self.waiting[ticket_id] = asyncio.get_running_loop().create_future()
        return future

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            ids = list(self.waiting)[:5000]
            if not ids:
                continue
            cur = await self.conn.execute(
                "SELECT id::text FROM tickets_ticket WHERE id = ANY(%s::uuid[]) AND status = ANY(%s)",
                (ids, list(TERMINAL)),
            )
            for (ticket_id,) in await cur.fetchall():
                future = self.waiting.pop(ticket_id)
                if not future.done():
                    future.set_result(None)
                self.counters.terminal += 1
            self.counters.in_flight = len(self.waiting)


@dataclass
class Offer:
    """Builds and sends the requests of one phase."""

    api_url: str
    token: str
    texts: list[tuple[str, str]]
    counters: Counters
    customers: int = 100_000
    seed: int = 1
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _payload(self) -> tuple[dict[str, Any], str]:
        text, category = self.rng.choice(self.texts)
        customer = f"cust-{self.rng.randrange(self.customers)}"
        return {"body": text, "customer_ref": customer, "channel": "bench"}, category

    async def submit(self, http: aiohttp.ClientSession, due: float | None = None) -> Sent:
        payload, category = self._payload()
        sent = Sent(due=due or time.time(), category=category)
        self.sent.append(sent)
        self.counters.sent += 1
        try:
            headers = {"Idempotency-Key": str(uuid.uuid4())}
            async with http.post("/api/v1/tickets/", json=payload, headers=headers) as response:
                sent.status = response.status
                body = await response.read()
            if sent.status == 202:
                sent.ticket_id = json.loads(body)["id"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            sent.error = type(exc).__name__
        sent.answered = time.time()
        if sent.ticket_id:
            self.counters.accepted += 1
        else:
            self.counters.failed += 1
        return sent

    def client(self, connections: int) -> aiohttp.ClientSession:
        """Keep-alive connections to the API. aiohttp rather than httpx: the load generator shares
        the machine with the system, and httpx's pool spent ~1 ms of CPU a request at 24
        connections (its expiry check walks every connection), the largest part of the bench's own
        CPU; aiohttp's client costs a fraction of that."""
        headers = {"Authorization": f"Bearer {self.token}"}
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
        timeout = aiohttp.ClientTimeout(total=30.0)
        return aiohttp.ClientSession(base_url=self.api_url, headers=headers, connector=connector, timeout=timeout)

    async def closed_loop(self, watcher: Watcher, concurrency: int, seconds: float) -> None:
        """`concurrency` users, each: submit, wait for the terminal state, repeat, until `seconds`."""
        deadline = time.monotonic() + seconds
        async with self.client(concurrency) as http:

            async def user() -> None:
                while time.monotonic() < deadline:
                    sent = await self.submit(http)
                    if sent.ticket_id:
                        await watcher.wait(sent.ticket_id)
                    else:
                        await asyncio.sleep(0.2)

            await asyncio.gather(*(user() for _ in range(concurrency)))

    async def open_loop(self, watcher: Watcher, rate: float, seconds: float, drain: float) -> None:
        """Poisson arrivals at `rate`/s for `seconds`; then wait (≤ `drain` s) for every ticket to end."""
        start = time.time()
        due, pending = start, []
        async with self.client(128) as http:
            while due < start + seconds:
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(self._submit_watched(http, watcher, due)))
                due += self.rng.expovariate(rate)
            done = await asyncio.gather(*pending)
        waits = [watcher.wait(s.ticket_id) for s in done if s.ticket_id]
        if waits:
            await asyncio.wait(waits, timeout=drain)

    async def _submit_watched(self, http: aiohttp.ClientSession, watcher: Watcher, due: float) -> Sent:
        sent = await self.submit(http, due)
        if sent.ticket_id:
            watcher.wait(sent.ticket_id)
        return sent
