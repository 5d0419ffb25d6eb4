"""The README's "What runs where" table says what the Procfile runs: every process type has a row,
and each worker row names the queues (`parse.1`–`parse.7` spans the lanes) and the pool of its
command. A change to one without the other fails here."""

from __future__ import annotations

import re
import shlex

from tests.deploy.topology import ROOT, procfile, worker_queues


def readme_rows() -> dict[str, tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("## What runs where", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def named_queues(cell: str) -> frozenset[str]:
    """The queues a README cell names in backticks; `parse.1`–`parse.7` stands for the span."""
    names = set(re.findall(r"`([a-z_]+)`", cell))
    for base, first, last in re.findall(r"`(\w+)\.(\d+)`\s*[–-]\s*`\w+\.(\d+)`", cell):
        names |= {f"{base}.{n}" for n in range(int(first), int(last) + 1)}
    return frozenset(names)


def test_every_procfile_process_has_a_row_in_the_readme():
    processes = set(procfile()) - {"samples"}  # `make run`'s sample requests, not a role
    assert processes <= set(readme_rows()), processes - set(readme_rows())


def check_rows(rows: dict[str, tuple[str, str]]) -> None:
    for name, command in procfile().items():
        queues = worker_queues(command)
        if not queues:
            continue
        cell, pool = rows[name]
        args = shlex.split(command)
        assert named_queues(cell) == queues, (name, named_queues(cell) ^ queues)
        assert pool.split(",")[0].split()[0] == args[args.index("--pool") + 1], (name, pool)
        if "--concurrency" in args and args[args.index("--pool") + 1] == "prefork":
            assert f"{args[args.index('--concurrency') + 1]} processes" in pool, (name, pool)


def test_each_worker_rows_queues_and_pool_are_its_procfile_commands():
    check_rows(readme_rows())


def test_a_readme_row_that_drifts_is_caught():
    rows = readme_rows()
    for drifted in (
        {**rows, "cheap": ("`parse`, `classify`, `decide`, `escalate`", rows["cheap"][1])},
        {**rows, "cheap": (rows["cheap"][0], "solo (scale with more processes)")},
    ):
        try:
            check_rows(drifted)
        except AssertionError:
            continue
        raise AssertionError(f"a drifted README row passed: {drifted['cheap']}")
