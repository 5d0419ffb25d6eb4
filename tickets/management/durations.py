"""Durations on the command line: `90s`, `30m`, `24h`, `7d` (or `0`)."""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.management.base import CommandError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """Parse `<number><s|m|h|d>`; a CommandError names the expected form."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if match is None:
        raise CommandError(f"{text!r} is not a duration like 90s, 30m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2) or "s"]: int(match.group(1))})
