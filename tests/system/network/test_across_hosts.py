"""Proven across a network: Postgres and the broker on one host, the API on another, two worker
hosts, the load from a client host. Under load one worker host is cut off (its link goes down) and
later killed; every accepted ticket must still reach exactly one terminal state, nothing may be done
twice, and the work must move to the surviving host. The table is printed at the end of the run."""

from __future__ import annotations

import os
import time

import pytest

from project.heartbeat import HEARTBEAT_STALE_SECONDS
from tests.system.network.netsystem import ROWS, WORKER_ROLES, NetSystem
from tests.system.reliability.audit import TERMINAL, audit, drain
from tests.system.reliability.load import Load

pytestmark = [pytest.mark.network]

RATE = float(os.environ.get("NETWORK_RATE", 4))
WARM, CUT_FOR, COOL, DRAIN = 4.0, 8.0, 6.0, 120.0


def unsettled(system: NetSystem, client_id: int) -> set[str]:
    rows = system.sql("SELECT id::text FROM tickets_ticket WHERE client_id = %s AND status <> ALL(%s)",
                      client_id, list(TERMINAL))  # fmt: skip
    return {r[0] for r in rows}


def test_a_worker_host_cut_off_and_then_killed_under_load_loses_and_repeats_nothing(netsystem: NetSystem):
    system = netsystem
    client = system.client_create("across-hosts")
    every_worker = sorted([f"{role}@{host}" for role in WORKER_ROLES for host in ("w1", "w2")] + ["maintenance@api"])
    assert system.live_workers() == every_worker
    with system.hosts.entered("client"):  # the load's threads are born on the client host
        load = Load(system.api_url, client, rate=RATE).start()
    try:
        # Downstream calls take a while, so the io workers hold some when the cable is pulled.
        system.downstream.delay = 1.5
        time.sleep(WARM)
        held_at_cut = unsettled(system, client.id)
        system.hosts.cut("w1")
        time.sleep(CUT_FOR)
        killed = system.kill_host("w1")
        killed_at = time.time()
        system.downstream.delay = 0.0
        time.sleep(COOL)
    finally:
        load.stop()
        system.downstream.delay = 0.0
    waited = drain(system, client, load, DRAIN)
    fault = f"worker host w1 cut off (link down), killed {CUT_FOR:.0f} s later"
    row = audit(system, client, load, fault=fault, restored_at=killed_at)
    worked_after = {
        r[0]
        for r in system.sql(
            "SELECT DISTINCT t.id::text FROM tickets_ticket t JOIN agents_trace r ON r.ticket_id = t.id"
            " WHERE t.client_id = %s AND r.started_at > to_timestamp(%s)",
            client.id, killed_at,
        )
    }  # fmt: skip
    moved = held_at_cut & worked_after
    survivors = sorted([f"{role}@w2" for role in WORKER_ROLES] + ["maintenance@api"])
    deadline = time.monotonic() + HEARTBEAT_STALE_SECONDS + 5  # w1's last heartbeats age out of the registry
    while (live := system.live_workers()) != survivors and time.monotonic() < deadline:
        time.sleep(0.5)
    row.note = (
        f"{len(held_at_cut)} tickets unsettled at the cut, {len(moved)} of them finished after the kill (by w2); "
        f"killed {', '.join(killed)}; {len(worked_after)} tickets worked on after the kill, all by w2; "
        f"live workers after: {', '.join(live)}; "
        f"settled {waited:.0f} s after the load stopped"
    )
    ROWS.append(row)
    print(f"\n{row.fault}: {row.note}")

    evidence = "\n".join(row.problems[:40])
    assert row.tickets > 0 and row.tickets == len(load.accepted)
    assert row.lost == 0, f"{row.lost} tickets not terminal:\n{evidence}"
    assert row.duplicated == 0, f"side effects done twice:\n{evidence}"
    assert row.misrouted == 0 and row.wrong_dead_letters == 0, evidence
    assert row.callbacks_missing == 0, evidence
    assert row.given_up == 0 and row.refused == 0, evidence
    assert sorted(killed) == [f"{role}@w1" for role in sorted(WORKER_ROLES)]
    assert live == survivors
    assert held_at_cut and worked_after  # the cut caught work in flight, and work went on
