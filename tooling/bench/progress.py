"""The progress line: phase, time, counts, rate and machine load, redrawn every second on a
terminal (one line every 10 s when the output is a file or a pipe)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

from tooling.bench.load import Counters


class Progress:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.phase, self.total, self.started = "starting", 0.0, time.monotonic()
        self.counters = Counters()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-progress", daemon=True)
        self._last_terminal, self._last_at = 0, time.monotonic()

    def start(self) -> Progress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty:
            self.stream.write("\n")

    def enter(self, phase: str, seconds: float = 0.0) -> Counters:
        """A new phase: fresh counters, its name and planned length on the line."""
        self.say(f"→ {phase}")
        self.phase, self.total, self.started = phase, seconds, time.monotonic()
        self.counters = Counters()
        self._last_terminal, self._last_at = 0, time.monotonic()
        return self.counters

    def say(self, message: str) -> None:
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}[bench {time.strftime('%H:%M:%S')}] {message}\n")
        self.stream.flush()

    def line(self) -> str:
        c, now = self.counters, time.monotonic()
        rate = (c.terminal - self._last_terminal) / max(now - self._last_at, 1e-9)
        self._last_terminal, self._last_at = c.terminal, now
        elapsed = now - self.started
        planned = f"/{self.total:.0f}" if self.total else ""
        extra = " ".join(f"{k} {v}" for k, v in c.extra.items())
        return (
            f"{self.phase} {elapsed:5.0f}{planned} s | sent {c.sent} ok {c.accepted} failed {c.failed} "
            f"done {c.terminal} in-flight {c.in_flight} | {rate:6.1f}/s | load {os.getloadavg()[0]:.2f} {extra}"
        )

    def _run(self) -> None:
        period = 1.0 if self.tty else 10.0
        while not self._stop.wait(period):
            text = self.line()
            self.stream.write(f"\r\033[K{text}" if self.tty else f"[bench] {text}\n")
            self.stream.flush()
