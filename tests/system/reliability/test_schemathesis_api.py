"""Schemathesis, `--checks all`, every phase, against a live server of the app (the CLI, as a client
would run it, against pytest-django's `live_server`): examples, coverage, fuzzing and stateful
(through the schema's links). It authenticates from the schema's bearer scheme (`ignored_auth`
then checks that each operation refuses a missing or wrong key). No failure of any kind passes:
no 5xx, every status code, header, content type and body as documented, invalid input refused and
valid input accepted.

Bounded for CI (`RELIABILITY_EXAMPLES` per operation and phase, default 30, a third of that for
stateful scenarios: two to four minutes on two busy cores); `RELIABILITY_SCHEMATHESIS_SEED` replays
or varies a run (default: a fixed seed, so CI is repeatable).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.factories import client_with_token
from tests.system.reliability.audit import knob

pytestmark = [pytest.mark.reliability]

EXAMPLES = int(knob("EXAMPLES", 30))
SEED = int(knob("SCHEMATHESIS_SEED", 20261202))
# The run's own bound: CI's depth takes minutes, `make schemathesis-deep` (400) most of an hour.
TIMEOUT = knob("SCHEMATHESIS_TIMEOUT", max(900, EXAMPLES * 15))
PHASES = ["examples", "coverage", "fuzzing", "stateful"]
# The schema's bearer scheme, with the key from the environment: Schemathesis knows which operations
# need it (and tries them without it).
CONFIG = f"""
[auth.openapi.bearerAuth]
bearer = "${{SCHEMATHESIS_API_KEY}}"

# No text the API takes may hold NUL (Postgres stores none; the schema's patterns say so for the
# fields, its description for metadata's nested values).
[generation]
allow-x00 = false

# 413 (a body over MAX_REQUEST_BYTES) is a documented refusal of invalid input too.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[phases.stateful]
max-steps = 8

[phases.stateful.generation]
max-examples = {max(10, EXAMPLES // 3)}
"""


@pytest.fixture
def broker_purged(transactional_db: Any) -> Any:
    """Accepted tickets enqueue work that no worker here consumes: drop it afterwards."""
    from celery import current_app

    yield
    current_app.control.purge()


def run_schemathesis(url: str, key: str, workdir: Path) -> dict[str, Any]:
    (workdir / "schemathesis.toml").write_text(CONFIG)
    report = workdir / "report.json"
    args = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(workdir / "schemathesis.toml")),
        *("run", f"{url}/api/schema/?format=json", "--checks", "all", "--phases", ",".join(PHASES)),
        *("--max-examples", str(EXAMPLES), "--seed", str(SEED), "--request-timeout", "30"),
        # One worker: Python 3.11's ast.parse is not thread-safe, and hypothesis calls it while drawing.
        *("--workers", "1", "--report", "json", "--report-json-path", str(report)),
        # How fast Hypothesis draws depends on the machine's load, not on the API: not a failure here.
        *("--suppress-health-check", "too_slow"),
    ]
    env = {**os.environ, "SCHEMATHESIS_API_KEY": key, "NO_COLOR": "1"}
    log = workdir / "schemathesis.log"  # followed with `tail -f` during a long run
    with log.open("w") as out:
        done = subprocess.run(args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    output = log.read_text(errors="replace")
    print(f"{log}:\n{output[-6000:]}")
    assert done.returncode is not None and report.exists(), output[-6000:]
    return json.loads(report.read_text())


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every generated callback host resolves to a public address (the machine has no DNS; the
    submit-time check of project/netguard runs unchanged on what it resolves to)."""
    from project.netguard import addresses

    monkeypatch.setattr(addresses, "resolve", lambda host, port, timeout: [ipaddress.ip_address("93.184.215.14")])


def test_schemathesis_finds_nothing_over_every_operation_in_every_phase(
    live_server, broker_purged, public_dns, tmp_path
):
    _, key = client_with_token(name="schemathesis")
    result = run_schemathesis(live_server.url, key, tmp_path)

    assert result["failures"] == [] and result["errors"] == [], json.dumps(result["failures"] or result["errors"])[
        :4000
    ]
    assert result["exit_code"] == 0 and result["complete"]
    assert result["operations"]["tested"] == result["operations"]["total"] == 5
    assert {name: phase["status"] for name, phase in result["phases"].items()} == dict.fromkeys(PHASES, "success")
    assert result["test_cases"]["generated"] >= 300
    print(f"schemathesis: {result['test_cases']} in {result['running_time']:.0f}s, seed {SEED}")
