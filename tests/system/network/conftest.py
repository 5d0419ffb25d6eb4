"""The network suite: the system spread over hosts made of network namespaces (root only).

Knobs (environment): NETWORK_RATE (requests/s, default 4), NETWORK_KEEP=1 (keep the servers'
directory and logs under /tmp/net-*).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.network.hosts import unavailable
from tests.system.network.netsystem import ROWS, NetSystem, binaries_missing
from tests.system.reliability.audit import table


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "network: the system over several hosts made of network namespaces (root)")


@pytest.fixture(scope="module")
def netsystem() -> Iterator[NetSystem]:
    reason = unavailable() or binaries_missing()
    if reason:
        pytest.skip(reason)
    var = Path(tempfile.mkdtemp(prefix="net-", dir="/tmp"))
    system = NetSystem(var, prefix=f"apnet{os.getpid()}")
    keep = os.environ.get("NETWORK_KEEP") == "1"
    try:
        system.start()
        yield system
    finally:
        system.stop()
        if not keep:
            shutil.rmtree(var, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ROWS:
        terminalreporter.section("network: the fault table")
        terminalreporter.write_line(table(ROWS))
        for row in ROWS:
            terminalreporter.write_line(f"{row.fault}: {row.note}; API answers {row.answers}")
