"""The fault suite: the real system as processes under steady load, one fault at a time.

After each fault every accepted ticket must be terminal (resolved, awaiting a person, or
dead-lettered with its reason), nothing may be done twice, dead letters must hold only what truly
failed, and every client must have been told. The table is printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.system.reliability.audit import ROWS, TERMINAL, Row, audit, drain, knob
from tests.system.reliability.load import KINDS, Load
from tests.system.reliability.proxy import Claude
from tooling.system import ROOT, WORKERS, ApiClient, System

pytestmark = [pytest.mark.reliability]

RATE = knob("RATE", 1)
SCALE = knob("SCALE", 1)
KILLS = int(knob("KILLS", 4))
DRAIN = knob("DRAIN_TIMEOUT", 90)
WARM, COOL = 2.0 * SCALE, 2.0 * SCALE

# Runs the fault; returns (when it ended, a note), or (when it began, a note, when it ended) for a
# fault whose recovery is counted from its start (a killed or frozen worker).
Fault = Callable[[System], tuple[float, str] | tuple[float, str, float]]


def run_under_load(
    system: System,
    name: str,
    fault: Fault,
    *,
    dead_letter_kinds: frozenset[str] = frozenset(),
    weights: dict[str, float] | None = None,
    rate: float | None = None,
    drain_timeout: float | None = None,
) -> Row:
    """Steady load, the fault, more load, then wait for the system to settle and audit it."""
    client = system.client_create(f"{name}-{uuid.uuid4().hex[:6]}")
    crashes = len(system.crashes)
    load = Load(system.api_url, client, rate=rate or RATE, **({"weights": weights} if weights else {})).start()
    try:
        time.sleep(WARM)
        restored_at, note, *window_end = fault(system)
        time.sleep(COOL)
    finally:
        load.stop()
    drain(system, client, load, max(DRAIN, drain_timeout or 0))
    row = audit(
        system, client, load, fault=name, restored_at=restored_at, dead_letter_kinds=dead_letter_kinds,
        window_end=window_end[0] if window_end else None,
    )  # fmt: skip
    crashed = [f"{what} exited {code}" for _, what, code in system.crashes[crashes:]]
    row.note = note + (f"; restarted by the supervisor: {', '.join(crashed)}" if crashed else "")
    ROWS.append(row)
    return row


def assert_promises_kept(row: Row) -> None:
    evidence = "\n".join(row.problems[:40])
    assert row.tickets > 0
    assert row.lost == 0, f"{row.lost} tickets lost:\n{evidence}"
    assert row.duplicated == 0, f"{row.duplicated} side effects duplicated:\n{evidence}"
    assert row.wrong_dead_letters == 0, f"dead letters that did not truly fail:\n{evidence}"
    assert row.misrouted == 0, f"tickets in the wrong terminal state:\n{evidence}"
    assert row.callbacks_missing == 0, f"clients not told:\n{evidence}"
    assert row.refused == 0 and row.given_up == 0, evidence


def assert_api_answered(row: Row, *, excused: list[tuple[float, float]] = ()) -> None:
    """Throughout the fault the API answered every request — 2xx, or 503/429 with Retry-After: no
    dropped connection, no timeout, no 500. `excused`: windows when the API's own process was down."""
    codes = {what for what in row.answers if what.isdigit()}
    assert codes <= {"200", "202", "429", "503"}, f"the API answered {row.answers}"
    slack = 1.0  # a client's request already failing when the window closed
    unexcused = [(at, what) for at, what in row.unanswered if not any(a <= at <= b + slack for a, b in excused)]
    assert not unexcused, f"{len(unexcused)} requests not answered as promised, e.g. {unexcused[:5]}; {row.answers}"


# --- SIGKILL ----------------------------------------------------------------------------------
# (process, what it is in the middle of): the io worker mid downstream call, then mid callback; the
# cheap worker holding a message; the maintenance worker.
KILL_ORDER = (("io", "downstream"), ("io", "callbacks"), ("cheap", ""), ("maintenance", ""))


def _kill_mid_stage(system: System, target: str, during: str, stale: set[bytes]) -> str:
    """SIGKILL `target` while it holds work: mid-call to `during` (the downstream API or the callback
    endpoint), else holding a message."""
    recorder = {"downstream": system.downstream, "callbacks": system.callbacks}.get(during)
    system.wait_ready(target)
    if recorder is not None:
        recorder.delay = 0.5
        caught = recorder.wait_in_flight(timeout=5 * SCALE)
    else:
        deadline = time.monotonic() + 3 * SCALE
        while not (caught := bool(system.held(target) - stale)) and time.monotonic() < deadline:
            time.sleep(0.02)
    system.kill(target, signal.SIGKILL)
    held = system.held(target) - stale
    stale |= held
    system.spawn(target)  # the supervisor starts it again; it takes a few seconds to be ready
    if recorder is not None:
        recorder.delay = 0.0
    return f"{target}{f' mid-{during}' if caught and recorder else ''} ({len(held)} held)"


def hops_held(system: System, target: str) -> list[list[object]]:
    """The hops the process `target` holds, as its last heartbeat listed them (project/heartbeat.py)."""
    from project.heartbeat import REGISTRY_KEY

    pid = system.procs[target].pid
    for raw in system.redis().hgetall(REGISTRY_KEY).values():
        record = json.loads(raw)
        if record.get("pid") == pid:
            return [hop for hop in record.get("hops", []) if hop[1]]
    return []


def wait_holding(system: System, target: str, timeout: float) -> list[list[object]]:
    """Until `target` holds a hop (or `timeout`): the hops it holds."""
    deadline = time.monotonic() + timeout
    while not (hops := hops_held(system, target)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return hops


@contextlib.contextmanager
def replica(system: System, target: str, timeout: float = 120) -> Iterator[subprocess.Popen[bytes]]:
    """A second process of the worker role `target` (as a deployment's other replicas are), ready,
    stopped warm at the end."""
    log_path = system.logs / f"{target}-replica.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*system.command(target), "-n", f"{target}-replica@%h"],
            cwd=ROOT, env=system.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while " ready." not in log_path.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")[-3000:]
            time.sleep(0.25)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def slow_downstream(system: System, target: str) -> Iterator[None]:
    """The io worker's hops wait 0.5 s on the downstream API, so it is caught mid-call."""
    system.downstream.delay = 0.5 if target == "io" else system.downstream.delay
    try:
        yield
    finally:
        system.downstream.delay = 0.0


def sigkill_holding(system: System, target: str) -> tuple[float, str, float]:
    """SIGKILL `target` (its whole process group) while it holds hops; the supervisor starts it
    again. Returns the moment of the kill: recovery is counted from the fault."""
    system.wait_ready(target)
    with slow_downstream(system, target):
        hops = wait_holding(system, target, 10 * SCALE)
        at = time.time()
        system.kill(target, signal.SIGKILL)
    system.spawn(target)
    system.wait_ready(target)
    return at, f"{target} SIGKILLed holding {len(hops)} hop(s), started again", time.time()


def sigstop_holding(system: System, target: str, frozen: float) -> tuple[float, str, float]:
    """SIGSTOP `target` (frozen, not killed: its connections stay open, its hops held) while it
    holds hops; SIGCONT after `frozen` seconds, when its hops have been done by others and its own
    writes must fail their conditions. Returns the moment it froze."""
    system.wait_ready(target)
    with slow_downstream(system, target):
        hops = wait_holding(system, target, 10 * SCALE)
        pid = system.procs[target].pid
        at = time.time()
        os.killpg(pid, signal.SIGSTOP)
    try:
        time.sleep(frozen)
    finally:
        os.killpg(pid, signal.SIGCONT)
    return at, f"{target} frozen {frozen:.0f} s holding {len(hops)} hop(s), then resumed", time.time()


def sigkill_workers(system: System) -> tuple[float, str]:
    stale: set[bytes] = set()
    notes = []
    for target, during in itertools.islice(itertools.cycle(KILL_ORDER), KILLS):
        notes.append(_kill_mid_stage(system, target, during, stale))
        time.sleep(2.0 * SCALE)
    restored_at = time.time()
    for target in {target for target, _ in KILL_ORDER}:
        system.wait_ready(target)
    return restored_at, "killed " + ", ".join(notes)


def test_a_worker_killed_mid_stage_again_and_again_loses_and_repeats_nothing(system: System) -> None:
    row = run_under_load(system, f"SIGKILL a worker mid-stage x{KILLS}", sigkill_workers)
    assert_promises_kept(row)
    assert_api_answered(row)


# --- Redis --------------------------------------------------------------------------------------
def restart_redis(system: System) -> tuple[float, str]:
    queued = sum(system.redis().llen(q) for name in WORKERS for q in system.queues(name))
    held = system.redis().hlen("unacked")
    system.redis_stop()
    time.sleep(3 * SCALE)
    system.redis_start()
    return time.time(), f"{queued} queued and {held} unacked messages vanished; down {3 * SCALE:.0f} s"


def test_a_redis_restart_with_work_in_flight_loses_nothing(system: System) -> None:
    row = run_under_load(system, "Redis restarted (empty)", restart_redis)
    assert_promises_kept(row)
    assert_api_answered(row)


# --- Postgres -----------------------------------------------------------------------------------
def stop_postgres(system: System, seconds: float = 5 * SCALE) -> tuple[float, str]:
    """`pg_ctl stop -m immediate`: connections cut mid-transaction, crash recovery on the start."""
    system.postgres_stop("immediate")
    time.sleep(seconds)
    system.postgres_start()
    return time.time(), f"stopped -m immediate, down {seconds:.0f} s"


def test_postgres_stopped_for_seconds_loses_nothing(system: System) -> None:
    row = run_under_load(system, "Postgres stopped", stop_postgres)
    assert_promises_kept(row)
    assert_api_answered(row)


# --- the client's callback endpoint -----------------------------------------------------------
def callbacks_down(system: System, seconds: float = 8 * SCALE) -> tuple[float, str]:
    system.callbacks.down()
    time.sleep(seconds)
    system.callbacks.up()
    return time.time(), f"connection refused for {seconds:.0f} s"


def test_a_callback_endpoint_down_for_a_while_is_told_once_it_is_back(system: System) -> None:
    row = run_under_load(system, "callback endpoint down", callbacks_down)
    assert_promises_kept(row)
    assert_api_answered(row)


# --- graceful shutdown --------------------------------------------------------------------------
def _submit(system: System, client: ApiClient, kind: str, n: int) -> list[str]:
    headers = {"Authorization": f"Bearer {client.token}"}
    ids = []
    for i in range(n):
        body = {"body": f"{KINDS[kind][0][0]} ({i})", "customer_ref": f"term-{uuid.uuid4().hex[:8]}"}
        response = httpx.post(f"{system.api_url}/api/v1/tickets/", json=body, headers=headers, timeout=10)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def _wait_terminal(system: System, ids: list[str], timeout: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = dict(system.sql("SELECT id::text, status FROM tickets_ticket WHERE id::text = ANY(%s)", ids))
        if len(rows) == len(ids) and all(s in TERMINAL for s in rows.values()):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"not terminal after {timeout}s: {rows}")


def test_sigterm_lets_a_worker_finish_the_calls_it_is_making(system: System) -> None:
    client = system.client_create(f"sigterm-finish-{uuid.uuid4().hex[:6]}")
    system.downstream.delay = 2.0
    try:
        ids = _submit(system, client, "webhook", 4)
        assert system.downstream.wait_in_flight(timeout=15), "execute never called downstream"
        time.sleep(0.3)
        in_call = [r for r in system.downstream.snapshot() if r.body.get("ticket_id") in ids and not r.answered]
        started = time.monotonic()
        code = system.kill("io", signal.SIGTERM)
        took = time.monotonic() - started
    finally:
        system.downstream.delay = 0.0
    assert code == 0, system.log_text("io")[-2000:]
    assert in_call and all(r.answered for r in in_call), "the worker died before its calls returned"
    system.restart("io")
    assert set(_wait_terminal(system, ids).values()) == {"resolved"}
    receipts = [r for r in system.downstream.snapshot() if r.body.get("ticket_id") in ids]
    assert len(receipts) == len({r.key for r in receipts}) == 4, "a call was made twice"
    print(f"SIGTERM with {len(in_call)} downstream calls in progress: exited 0 after {took:.1f} s, all answered")


def test_sigterm_hands_back_the_retries_a_worker_holds(system: System) -> None:
    if system.env.get("CELERY_BROKER_URL", "").startswith("amqp"):
        pytest.skip("on RabbitMQ a retry waits in the broker's delayed-delivery queues, not in the worker")
    client = system.client_create(f"sigterm-handback-{uuid.uuid4().hex[:6]}")
    system.downstream.fail_first = True  # each first call 503: the retry waits in the worker (an ETA)
    try:
        ids = _submit(system, client, "webhook", 3)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            failed = {r.body.get("ticket_id") for r in system.downstream.snapshot() if r.status == 503}
            if set(ids) <= failed:
                break
            time.sleep(0.01)
        held = system.held("io")
        code = system.kill("io", signal.SIGTERM)
        handed_back = sum(system.redis().llen(q) for q in system.queues("io"))
    finally:
        system.downstream.fail_first = False
    assert code == 0
    assert held, "the io worker held no retry when it was stopped"
    assert not (system.held("io") & held), "messages the worker held stayed unacknowledged"
    assert handed_back >= 1, "the retries the worker held were not put back on the queue"
    system.restart("io")
    assert set(_wait_terminal(system, ids).values()) == {"resolved"}
    applied = [r for r in system.downstream.snapshot() if r.body.get("ticket_id") in ids and r.applied]
    assert len(applied) == 3
    print(f"SIGTERM holding {len(held)} retries: exited 0, {handed_back} message(s) back on the io queues")


# --- the simulator (Claude tier) ------------------------------------------------------------------
def test_claude_answering_one_call_in_five_badly_loses_nothing(system: System, simulator: Claude | None) -> None:
    if simulator is None:
        pytest.skip("no working Claude tier (agents/llm/tier.py): the simulator row is left out")

    def faults(system: System) -> tuple[float, str]:
        before, proxied = simulator.sim.stats(), dict(simulator.proxy.counts)
        # 4 % each: 429 (the proxy), then 529, 500, timeouts and malformed JSON (the simulator).
        simulator.proxy.rate_429 = 0.04
        simulator.sim.configure(fault_rates={"529": 0.042, "500": 0.042, "timeout": 0.042, "malformed": 0.042})
        time.sleep(10 * SCALE)
        simulator.sim.configure(fault_rates={})
        simulator.proxy.rate_429 = 0.0
        after = simulator.sim.stats()
        injected = {k: n - before.get("faults", {}).get(k, 0) for k, n in after.get("faults", {}).items()}
        injected["429"] = simulator.proxy.counts["429"] - proxied.get("429", 0)
        calls = simulator.proxy.counts["429"] + simulator.proxy.counts["forwarded"] - sum(proxied.values())
        return time.time(), f"{calls} calls to Claude in the window; injected {injected}"

    # Mostly requests only the Claude tier can classify, so the faults meet real traffic.
    weights = {"llm": 6, "reply": 1, "webhook": 1, "policy": 1, "unknown": 1}
    row = run_under_load(
        system,
        "simulator: 20 % of calls fail",
        faults,
        dead_letter_kinds=frozenset({"llm"}),
        weights=weights,
        rate=2.5 * RATE,  # Claude's calls wait on the network, not the CPU: more of them for the same cost
    )
    assert_promises_kept(row)
