"""Noisy neighbour: tenant A sends ten times B's steady traffic, floods the API past its share of the
work in flight, sends CPU bombs, points its callbacks at an endpoint that trickles one byte every two
seconds and sends 50 requests for one customer, while tenant B sends ordinary tickets at a steady
rate. B is never refused (A is, at its own share: 429), B's tickets all settle and get their
callbacks, every accepted ticket of both ends in a terminal state, and B's latency beside A is
printed and written to var/noisy-neighbour.json beside an idle run's (figures, not a timed
assertion: the machine is shared; the bound below only catches a stall). The target (issue #24):
B's p95 beside A at most 2× B's p95 alone.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tooling.system import ApiClient, System

pytestmark = pytest.mark.noisy

TERMINAL = {"resolved", "awaiting_review", "dead_lettered"}
BOMBS = [
    "㏘" * 20_000,  # expands 4× under NFKC: refused at the API
    "a." * 9_000,
    "a-" * 9_000 + "@",
    "1-" * 9_000,
    "411-" * 4_500,
    "+44-20-" * 2_500,
    "\n" * 19_000 + "x",
    "e" + "\u0301" * 9_000 + "\u0316" * 9_000,
    "my card " * 2_400,
]
SECONDS = 12.0
B_EVERY = 0.2  # B's steady rate: 5 a second; A's steady traffic is ten times that, its flood on top
# The system's bound of tickets in flight: with two tenants active, each may hold half of it.
IN_FLIGHT = 64
FIGURES = Path(__file__).resolve().parents[3] / "var" / "noisy-neighbour.json"


@pytest.fixture(scope="module")
def system() -> System:
    var = Path(tempfile.mkdtemp(prefix="noisy-", dir="/tmp"))
    # The product's throttle (100 a second: above A's steady traffic, below its flood); what refuses
    # A's admitted traffic is its share of the work in flight.
    env = {"CLIENT_THROTTLE_RATE": "6000/min", "BACKPRESSURE_MAX_IN_FLIGHT": str(IN_FLIGHT)}
    system = System(var, env=env | {"BACKPRESSURE_TENANT_FLOOR": "8"})
    try:
        system.start()
        yield system
    finally:
        system.stop()
        shutil.rmtree(var, ignore_errors=True)


class Tenant:
    """Posts tickets for one client and remembers what was accepted."""

    def __init__(self, system: System, client: ApiClient):
        self.url = f"{system.api_url}/api/v1/tickets/"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {client.token}"}, timeout=30)
        self.accepted: list[str] = []
        self.answers: dict[str, int] = {}
        self.refusals: dict[str, int] = {}  # the `error` of each 429/503: "overloaded" (its share) or "throttled"
        self.lock = threading.Lock()

    def post(self, body: str, customer_ref: str) -> None:
        try:
            response = self.http.post(self.url, json={"body": body, "customer_ref": customer_ref})
            code = str(response.status_code)
        except httpx.HTTPError as exc:
            response, code = None, type(exc).__name__
        with self.lock:
            self.answers[code] = self.answers.get(code, 0) + 1
            if response is not None and response.status_code == 202:
                self.accepted.append(response.json()["id"])
            elif response is not None and response.status_code in (429, 503):
                error = response.json().get("error", "")
                self.refusals[error] = self.refusals.get(error, 0) + 1


def steady(tenant: Tenant, seconds: float, every: float = B_EVERY, prefix: str = "b") -> None:
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        tenant.post("My card still hasn't arrived, where is it?", f"{prefix}-{i}")
        i += 1
        time.sleep(every)


def flood(tenant: Tenant, seconds: float, stop: threading.Event) -> None:
    end, i = time.monotonic() + seconds, 0
    while time.monotonic() < end and not stop.is_set():
        tenant.post("How do I top up with a card?", f"a-{i}")
        i += 1


def noisy(system: System, a: Tenant, seconds: float) -> list[threading.Thread]:
    stop = threading.Event()
    threads = [threading.Thread(target=flood, args=(a, seconds, stop)) for _ in range(4)]
    # Ten times B's steady traffic, besides the flood: ten senders at B's rate.
    threads += [threading.Thread(target=steady, args=(a, seconds, B_EVERY, f"a{n}")) for n in range(10)]
    threads.append(threading.Thread(target=lambda: [a.post(body, f"bomb-{i}") for i, body in enumerate(BOMBS)]))
    threads.append(
        threading.Thread(target=lambda: [a.post(f"Where is my card? ({i})", "one-customer") for i in range(50)])
    )
    for thread in threads:
        thread.start()
    return threads


def wait_terminal(system: System, ids: list[str], timeout: float) -> dict[str, str]:
    deadline, rows = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        rows = dict(system.sql("SELECT id::text, status FROM tickets_ticket WHERE id::text = ANY(%s)", ids))
        if len(rows) == len(ids) and set(rows.values()) <= TERMINAL:
            return rows
        time.sleep(1.0)
    return rows


def latencies_ms(system: System, ids: list[str]) -> list[float]:
    rows = system.sql(
        "SELECT extract(epoch FROM updated_at - created_at) * 1000 FROM tickets_ticket WHERE id::text = ANY(%s)", ids
    )
    return sorted(float(ms) for (ms,) in rows)


def waits_ms(system: System, ids: list[str]) -> list[float]:
    """How long each ticket waited for its first hop to start (created to the first trace row's start)."""
    rows = system.sql(
        "SELECT extract(epoch FROM min(r.started_at) - t.created_at) * 1000 FROM tickets_ticket t "
        "JOIN agents_trace r ON r.ticket_id = t.id WHERE t.id::text = ANY(%s) GROUP BY t.id, t.created_at",
        ids,
    )
    return sorted(float(ms) for (ms,) in rows) or [0.0]


def callbacks_told(system: System, ids: set[str], timeout: float) -> set[str]:
    """The tickets of `ids` whose callback arrived, waiting up to `timeout` for all of them."""
    deadline = time.monotonic() + timeout
    while True:
        told = {r.body.get("ticket", {}).get("id") for r in system.callbacks.snapshot()} & ids
        if told == ids or time.monotonic() > deadline:
            return told
        time.sleep(0.5)


def p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def test_one_tenant_cannot_stall_another(system: System) -> None:
    a_client = system.client_create("tenant-a")
    system.sql(
        "UPDATE tickets_client SET callback_url = %s WHERE id = %s",
        f"{system.callbacks.base_url}/trickle/tenant-a",
        a_client.id,
    )
    b_idle, b_noisy, a = (Tenant(system, system.client_create(n)) for n in ("tenant-b-idle", "tenant-b", "x"))
    a = Tenant(system, a_client)

    steady(b_idle, SECONDS)  # B alone
    threads = noisy(system, a, SECONDS)
    steady(b_noisy, SECONDS)  # B while A does its worst
    for thread in threads:
        thread.join(timeout=120)

    b_ids = b_idle.accepted + b_noisy.accepted
    b_rows = wait_terminal(system, b_ids, timeout=60)
    a_rows = wait_terminal(system, a.accepted, timeout=240)
    idle, loaded = latencies_ms(system, b_idle.accepted), latencies_ms(system, b_noisy.accepted)
    told = callbacks_told(system, set(b_ids), timeout=30)
    figures = {
        "b_alone_p50_ms": round(statistics.median(idle)),
        "b_alone_p95_ms": round(p95(idle)),
        "b_alone_tickets": len(idle),
        "b_beside_a_p50_ms": round(statistics.median(loaded)),
        "b_beside_a_p95_ms": round(p95(loaded)),
        "b_beside_a_tickets": len(loaded),
        "ratio_p95": round(p95(loaded) / max(p95(idle), 1.0), 2),
        "b_alone_first_hop_wait_p95_ms": round(p95(waits_ms(system, b_idle.accepted))),
        "b_beside_a_first_hop_wait_p95_ms": round(p95(waits_ms(system, b_noisy.accepted))),
        "a_answers": a.answers,
        "a_refusals": a.refusals,
        "a_accepted": len(a.accepted),
        "b_answers": [b_idle.answers, b_noisy.answers],
    }
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nnoisy neighbour ({FIGURES}): {json.dumps(figures)}")

    assert set(b_rows.values()) <= TERMINAL and len(b_rows) == len(b_ids), "a ticket of B never settled"
    assert set(a_rows.values()) <= TERMINAL and len(a_rows) == len(a.accepted), "a ticket of A never settled"
    assert b_noisy.answers.get("202") == sum(b_noisy.answers.values()), f"B was refused: {b_noisy.answers}"
    assert told >= set(b_ids), f"{len(set(b_ids) - told)} of B's callbacks never arrived"
    assert a.refusals.get("overloaded", 0) > 0, f"A was never refused at its share: {a.refusals}"
    assert p95(loaded) < max(10 * p95(idle), 3000), "B's tickets stalled behind A's"
