"""What is sensitive in a text: card numbers (Luhn-valid), e-mail addresses and phone numbers, found
in linear time (RE2), and masked with typed placeholders. The parse stage marks them on every ticket;
the JSON logs mask them in every line (project/logging.py)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate

import re2


def re2_compile(pattern: str, *, capture: bool = False) -> re2._Regexp:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = not capture
    return re2.compile(pattern, options)


# RE2 never backtracks: each scan is linear in the text (Python's `re` took seconds on "a." * 10,000
# for the e-mail pattern). The patterns run over `shadow(text)`, where RE2's ASCII `\w \d \s \b`
# mean what Python's Unicode ones did; spans are the same in both.
_CARD = re2_compile(r"\b(?:\d[ -]?){12,18}\d\b")
_EMAIL = re2_compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# Python's `(?<![\w+])` look-behind, which RE2 lacks: the character before is matched instead.
_PHONE = re2_compile(r"(?:^|[^\w+])(\+?\d[\d ()-]{7,}\d)\b", capture=True)


class _ShadowTable(dict[int, int]):
    """For str.translate: a non-ASCII character → an ASCII one of the same regex class."""

    def __missing__(self, cp: int) -> int:
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            out = 0xFFFD  # a lone surrogate (log text): RE2 takes only valid UTF-8
        elif ch.isspace() and ch not in " \t\n\r\f":
            out = ord("\f")  # \s for both; not the literal space some patterns spell out
        elif cp < 0x80:
            out = cp  # RE2's classes are Python's here
        elif ch.isdecimal():
            out = ord("0")  # \d (and \w)
        elif ch.isalnum():
            out = ord("_")  # \w, and no letter a pattern spells out
        else:
            out = cp  # neither: RE2's \W and \S
        if len(self) < 65_536:  # the common characters; a text of rare ones just pays the lookups
            self[cp] = out
        return out


_SHADOW = _ShadowTable()


def shadow(text: str) -> str:
    """`text` with each non-ASCII character standing for its class, for RE2's ASCII classes."""
    return text.translate(_SHADOW)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdecimal())


def _overlap_test(taken: list[tuple[int, int]]) -> Callable[[int, int], bool]:
    """Whether a span overlaps any of `taken`, in O(log n) (a loop over all of them was quadratic)."""
    taken = sorted(taken)
    starts = [a for a, _ in taken]
    max_end = list(accumulate((b for _, b in taken), max))

    def overlaps(start: int, end: int) -> bool:
        i = bisect_left(starts, end)  # taken[:i] start before `end`
        return i > 0 and max_end[i - 1] > start

    return overlaps


def find_sensitive(text: str) -> list[dict[str, object]]:
    """Card numbers (Luhn-valid), e-mail addresses and phone numbers, as spans of `text`."""
    spans: list[dict[str, object]] = []
    shadowed = shadow(text)
    for m in _CARD.finditer(shadowed):
        digits = _digits(text[m.start() : m.end()])
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            spans.append({"type": "card_number", "start": m.start(), "end": m.end()})
    for m in _EMAIL.finditer(shadowed):
        spans.append({"type": "email", "start": m.start(), "end": m.end()})
    overlaps = _overlap_test([(int(s["start"]), int(s["end"])) for s in spans])  # type: ignore[call-overload]
    for m in _PHONE.finditer(shadowed):
        start, end = m.start(1), m.end(1)
        if not overlaps(start, end) and len(_digits(text[start:end])) >= 9:
            spans.append({"type": "phone", "start": start, "end": end})
    return sorted(spans, key=lambda s: s["start"])  # type: ignore[arg-type, return-value]


def mask(text: str, spans: list[dict[str, object]]) -> str:
    """Replace each sensitive span with a typed placeholder, for logs and prompts."""
    out, pos = [], 0
    for span in spans:
        start, end = int(span["start"]), int(span["end"])  # type: ignore[call-overload]
        out.append(text[pos:start])
        out.append(f"[{str(span['type']).upper()}]")
        pos = end
    out.append(text[pos:])
    return "".join(out)


# --- where the operator's network is --------------------------------------------------------------
# Error texts name URLs, hosts and addresses (a downstream webhook's, the model provider's, a
# server that refused): the operator's to read, not a tenant's. `redact_locations` replaces each
# with a placeholder, the same text for the same error, so a tenant still sees what went wrong.
_LOCATIONS = re2_compile(
    r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()]+"  # a URL
    r"|\[?(?:[0-9a-fA-F]{0,4}:){2,6}\d{1,3}(?:\.\d{1,3}){3}\]?(?::\d+)?"  # IPv6 with an IPv4 tail
    r"|\[?(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\]?(?::\d+)?"  # a full IPv6 address
    r"|\[?(?:[0-9a-fA-F]{1,4}:)*[0-9a-fA-F]{0,4}::(?:[0-9a-fA-F]{1,4}:)*[0-9a-fA-F]{0,4}\]?(?::\d+)?"  # with ::
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"  # an IPv4 address
    r"|\b(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}\b\.?(?::\d+)?"  # a host name
)


def redact_locations(text: str) -> str:
    """`text` with every URL, IP address and host name replaced by `[URL]`, `[ADDRESS]`, `[HOST]`."""

    def placeholder(found: str) -> str:
        if "://" in found:
            return "[URL]"
        if ":" in found.rstrip("0123456789").rstrip(":") or found[:1].isdigit():
            return "[ADDRESS]"
        return "[HOST]"

    out, pos = [], 0
    for m in _LOCATIONS.finditer(text):
        if m.end() == m.start():
            continue
        out.append(text[pos : m.start()])
        out.append(placeholder(m.group(0)))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def mask_sensitive(text: str) -> str:
    """`text` with its card numbers, e-mail addresses and phone numbers masked (`find_sensitive`)."""
    return mask(text, find_sensitive(text)) if text else text


def mask_url(url: str) -> str:
    """A URL as someone who may know where it points, but not its path or query (which often
    carry a token), reads it: `https://hooks.example.com/…`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "…" if url else url
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/…"
