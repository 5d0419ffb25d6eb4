"""The reliability suite's fixtures: the whole system as processes, on servers of its own.

Knobs (environment): RELIABILITY_RATE (requests/s, default 1), RELIABILITY_SCALE (multiplies
every fault's duration and the load windows, default 1), RELIABILITY_KILLS (SIGKILLs, default 4),
RELIABILITY_DRAIN_TIMEOUT (s, default 90), RELIABILITY_EXAMPLES (schemathesis cases per
operation, default 30), RELIABILITY_KEEP=1 (keep the servers' directory and logs),
RELIABILITY_SIMULATOR=0 (leave the Claude tier out even when it is there), RELIABILITY_RESULTS (a
file the fault table is appended to). The production-settings
run (test_fault_suite_production.py, `make faults-production`) also takes
RELIABILITY_CALLBACK_DOWN (s, default 130), RELIABILITY_POSTGRES_DOWN (s, default 8),
RELIABILITY_FROZEN (s a worker stays SIGSTOPped, default 30) and RELIABILITY_RECOVERY_BOUND (s,
default 120).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.reliability.audit import ROWS, record, table
from tests.system.reliability.proxy import Claude, FaultProxy
from tooling.system import PYTHON, ROOT, SimulatorProcess, System


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the load's thousands of requests


def llm_tier_works() -> bool:
    """Whether the Claude tier (agents/intents/claude.py) exists and builds; the simulator row needs it."""
    if os.environ.get("RELIABILITY_SIMULATOR", "1") == "0" or not (ROOT / "agents" / "intents" / "claude.py").exists():
        return False
    probe = (
        "import django, os; os.environ['ANTHROPIC_API_KEY']='sim'; django.setup();"
        "from django.conf import settings; from django.utils.module_loading import import_string;"
        "import_string(settings.LLM_TIER)()"
    )
    env = {**os.environ, "ANTHROPIC_API_KEY": "sim", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    env.update(DJANGO_SETTINGS_MODULE="project.settings")
    env.pop("PYTEST_VERSION", None)
    done = subprocess.run([PYTHON, "-c", probe], cwd=ROOT, env=env, capture_output=True, timeout=120, text=True)
    if done.returncode:
        print(f"the Claude tier does not build, so the simulator row is left out:\n{done.stderr[-2000:]}")
    return done.returncode == 0


@pytest.fixture(scope="session")
def simulator() -> Iterator[Claude | None]:
    """The Messages API simulator in a process of its own, or None when there is no Claude tier."""
    if not llm_tier_works():
        yield None
        return
    sim = SimulatorProcess().start()
    proxy = FaultProxy(sim.base_url)
    yield Claude(sim, proxy)
    proxy.stop()
    sim.stop()


@contextlib.contextmanager
def running_system(simulator: Claude | None, *, production: bool = False) -> Iterator[System]:
    var = Path(os.environ.get("RELIABILITY_VAR_DIR") or tempfile.mkdtemp(prefix="rel-", dir="/tmp"))
    system = System(var, llm_base_url=simulator.base_url if simulator else "", production=production)
    try:
        system.start()
        yield system
    finally:
        keep = os.environ.get("RELIABILITY_KEEP") == "1"
        system.stop(keep=keep)
        if not keep:
            shutil.rmtree(var, ignore_errors=True)


@pytest.fixture(scope="session")
def system(simulator: Claude | None) -> Iterator[System]:
    """The system with the suite's short deadlines (tooling/system.py's SUITE_KNOBS)."""
    with running_system(simulator) as system:
        yield system


@pytest.fixture(scope="module")
def production_system(simulator: Claude | None) -> Iterator[System]:
    """The system with DJANGO_ENV=production and the product's own defaults."""
    with running_system(simulator, production=True) as system:
        yield system


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ROWS:
        terminalreporter.section("reliability: the fault table")
        terminalreporter.write_line(table(ROWS))
        for row in ROWS:
            terminalreporter.write_line(f"{row.fault}: {row.note}; API answers {row.answers}")
        record(ROWS)
