"""`manage.py llm_simulator [--port 8765 --rpm 600 ...]`: the Messages API simulator, in the foreground.

The flags are the simulator's own (`python -m tooling.llm_simulator --help`); point the tier at it
with `ANTHROPIC_BASE_URL=http://127.0.0.1:8765 ANTHROPIC_API_KEY=test`.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tooling.llm_simulator.__main__ import main


class Command(BaseCommand):
    help = "Run the local Messages API simulator (flags as in `python -m tooling.llm_simulator --help`)."

    def run_from_argv(self, argv: list[str]) -> None:
        # The simulator parses its own flags; Django's parser would reject them.
        raise SystemExit(main(argv[2:]))
