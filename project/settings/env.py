"""The one reader of the environment: `env.<type>(NAME, default=...)`. A `.env` file at the top of
the checkout is read first, for every command (manage.py, Celery, gunicorn, the Makefile's targets);
a variable already set in the environment wins over the file."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
if (BASE_DIR / ".env").exists():  # optional: without it, the environment alone
    environ.Env.read_env(BASE_DIR / ".env")
