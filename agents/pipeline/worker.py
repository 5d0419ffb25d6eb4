"""Start a worker role with its queues from the stage spec, so no deployment file lists them by hand:

    python -m agents.pipeline.worker ROLE [celery worker options]   # exec `celery -A project worker -E -Q … -n ROLE@%h …`
    python -m agents.pipeline.worker --queues ROLE                   # print ROLE's queues, comma-separated
    python -m agents.pipeline.worker --roles                         # print every role and its queues, as YAML

The Procfile, compose.yaml and the Helm chart run the first; the chart's KEDA triggers read the last
(deploy/helm/agent-pipeline/queues.yaml, checked against the spec by tests/deploy).
"""

from __future__ import annotations

import os
import sys

ROLES_HEADER = """\
# Written by `python -m agents.pipeline.worker --roles > deploy/helm/agent-pipeline/queues.yaml`, from
# the stage spec (agents/pipeline/spec.py): each worker role's queues, for the KEDA triggers.
"""


def celery_argv(role: str, options: list[str]) -> list[str]:
    """The celery command that runs `role` with `options`."""
    from agents.pipeline.spec import worker_roles

    queues = worker_roles()[role]
    named = any(o == "-n" or o.startswith("--hostname") for o in options)  # a harness names its nodes
    node = [] if named else ["-n", f"{role}@%h"]
    return [sys.executable, "-m", "celery", "-A", "project", "worker", "-E", "-Q", ",".join(queues), *node, *options]


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from agents.pipeline.spec import worker_roles

    roles = worker_roles()
    if argv[:1] == ["--roles"]:
        print(ROLES_HEADER + "\n".join(f"{role}: [{', '.join(queues)}]" for role, queues in roles.items()))
    elif argv[:1] == ["--queues"] and len(argv) == 2 and argv[1] in roles:
        print(",".join(roles[argv[1]]))
    elif argv and argv[0] in roles:
        command = celery_argv(argv[0], argv[1:])
        os.execv(command[0], command)
    else:
        sys.exit(
            f"usage: python -m agents.pipeline.worker ROLE [celery options] | --queues ROLE | --roles; roles: {', '.join(roles)}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
