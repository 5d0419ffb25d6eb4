"""`python -m project.flower`: Flower, refused without a password. It listens on `FLOWER_ADDRESS`
(loopback unless the operator says otherwise) with basic auth from `FLOWER_BASIC_AUTH`
(`user:password`, a password of 12 characters at least), then runs `celery flower` in its place.
The password stays in the environment, which Flower reads itself (its `FLOWER_*` options): it is
never on the command line, where `ps` and /proc/<pid>/cmdline show it to every user of the host."""

from __future__ import annotations

import os
import sys

MIN_PASSWORD = 12


def flower_argv(environ: dict[str, str]) -> list[str]:
    """The `celery flower` command line, or SystemExit with the reason."""
    auth = environ.get("FLOWER_BASIC_AUTH", "")
    pairs = [pair.partition(":") for pair in auth.split(",") if pair]
    if not pairs or any(not user or len(password) < MIN_PASSWORD for user, _, password in pairs):
        raise SystemExit(
            f"FLOWER_BASIC_AUTH must be user:password with a password of {MIN_PASSWORD}+ characters: "
            "Flower shows and controls every worker"
        )
    return [
        "celery",
        "-A",
        "project",
        "flower",
        f"--port={environ.get('FLOWER_PORT', '5555')}",
        f"--address={environ.get('FLOWER_ADDRESS', '127.0.0.1')}",
        "--persistent=False",
    ]


def main() -> None:
    argv = flower_argv(dict(os.environ))
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # Flower keeps its own metrics, in memory
    os.execvp(argv[0], [*argv, *sys.argv[1:]])


if __name__ == "__main__":
    main()
