"""parse: clean, normalise, validate, detect the language, mark what logs must mask."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate

import re2

from agents.stages.types import StageContext, StageResult, TicketInput
from project.textnorm import nfkc

# A request longer than this once normalised is cleaned and classified on its first this many
# characters. The API refuses bodies over TICKET_BODY_MAX_CHARS (20,000) after NFKC already: this
# bounds the work on what came in another way (older rows, an operator's higher limit).
MAX_TEXT_CHARS = 50_000


def _re2(pattern: str, *, capture: bool = False) -> re2._Regexp:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = not capture
    return re2.compile(pattern, options)


# RE2 never backtracks: each scan is linear in the text (Python's `re` took seconds on "a." * 10,000
# for the e-mail pattern). The patterns run over `_shadow(text)`, where RE2's ASCII `\w \d \s \b`
# mean what Python's Unicode ones did; spans are the same in both.
_QUOTE_HEADER = _re2(r"(?im)^\s*(on .{0,200} wrote:|-{2,}\s*original message\s*-{2,}|from: .+)$")
_SIGNATURE = _re2(
    r"(?im)(^--\s*$|^sent from my \w+.*$|^(kind |best )?regards,?\s*$|^thanks?( you)?,?\s*$|^cheers,?\s*$)"
)
_CONTROL = {cp: " " for cp in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
_CARD = _re2(r"\b(?:\d[ -]?){12,18}\d\b")
_EMAIL = _re2(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# Python's `(?<![\w+])` look-behind, which RE2 lacks: the character before is matched instead.
_PHONE = _re2(r"(?:^|[^\w+])(\+?\d[\d ()-]{7,}\d)\b", capture=True)
_WANTS_HUMAN = _re2(
    r"(?i)\b(speak|talk|chat)\s+(to|with)\s+(a|an|some)?\s*(real\s+|actual\s+|live\s+)?"
    r"(human|person|agent|someone|representative|manager)\b|\breal person\b",
)


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


def _shadow(text: str) -> str:
    """`text` with each non-ASCII character standing for its class, for RE2's ASCII classes."""
    return text.translate(_SHADOW)


_STOPWORDS = {
    "en": {"the", "my", "is", "i", "to", "a", "and", "you", "it", "card", "what", "how", "can", "have"},
    "es": {"el", "la", "mi", "es", "que", "de", "y", "no", "tarjeta", "por", "para", "una", "como"},
    "fr": {"le", "la", "mon", "ma", "est", "je", "et", "pas", "carte", "pour", "une", "comment", "vous"},
    "de": {"der", "die", "das", "mein", "meine", "ist", "ich", "und", "nicht", "karte", "wie", "eine"},
    "pt": {"o", "a", "meu", "minha", "é", "que", "de", "e", "não", "cartão", "para", "uma", "como"},
    "it": {"il", "la", "mio", "mia", "è", "che", "di", "e", "non", "carta", "per", "una", "come"},
}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum card numbers carry."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def clean(subject: str, body: str) -> str:
    """Normalise unicode and whitespace; drop quoted replies and signatures."""
    text = nfkc(body)[:MAX_TEXT_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_CONTROL)
    header = _QUOTE_HEADER.search(_shadow(text))
    if header:
        text = text[: header.start()]
    lines = [ln for ln in text.split("\n") if not ln.lstrip().startswith(">")]
    text = "\n".join(lines)
    sig = _SIGNATURE.search(_shadow(text))
    if sig and sig.start() > 0 and len(text) - sig.start() < 300:
        text = text[: sig.start()]
    if subject.strip():
        text = f"{nfkc(subject)[:MAX_TEXT_CHARS].strip()}. {text}"
    return " ".join(text.split())[:MAX_TEXT_CHARS]


def detect_language(text: str) -> str:
    """Guess the language from common words; 'und' when there is too little to tell."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 2:
        return "und"
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else "und"


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
    shadow = _shadow(text)
    for m in _CARD.finditer(shadow):
        digits = _digits(text[m.start() : m.end()])
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            spans.append({"type": "card_number", "start": m.start(), "end": m.end()})
    for m in _EMAIL.finditer(shadow):
        spans.append({"type": "email", "start": m.start(), "end": m.end()})
    overlaps = _overlap_test([(int(s["start"]), int(s["end"])) for s in spans])  # type: ignore[call-overload]
    for m in _PHONE.finditer(shadow):
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


def parse(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Clean the request and mark what is sensitive; escalate what has no words left."""
    text = clean(ticket.subject, ticket.body)
    spans = find_sensitive(text)
    output = {
        "text": text,
        "masked": mask(text, spans),
        "sensitive": spans,
        "language": detect_language(text),
        "wants_human": bool(_WANTS_HUMAN.search(_shadow(text))),
        "chars": len(text),
    }
    if not re.search(r"[^\W_]", text):
        output["problem"] = "no words left after removing quotes and signatures"
        return StageResult(output=output, confidence=0.0, escalate="stage_failed")
    return StageResult(output=output, confidence=1.0)
