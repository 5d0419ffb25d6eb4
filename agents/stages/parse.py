"""parse: clean, normalise, validate, detect the language, mark what logs must mask."""

from __future__ import annotations

import re
import unicodedata

from agents.stages.types import StageContext, StageResult, TicketInput

_QUOTE_HEADER = re.compile(r"^\s*(on .{0,200} wrote:|-{2,}\s*original message\s*-{2,}|from: .+)$", re.I | re.M)
_SIGNATURE = re.compile(
    r"(^--\s*$|^sent from my \w+.*$|^(kind |best )?regards,?\s*$|^thanks?( you)?,?\s*$|^cheers,?\s*$)",
    re.I | re.M,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ()-]{7,}\d\b")
_WANTS_HUMAN = re.compile(
    r"\b(speak|talk|chat)\s+(to|with)\s+(a|an|some)?\s*(real\s+|actual\s+|live\s+)?"
    r"(human|person|agent|someone|representative|manager)\b|\breal person\b",
    re.I,
)
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
    text = unicodedata.normalize("NFKC", body).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub(" ", text)
    header = _QUOTE_HEADER.search(text)
    if header:
        text = text[: header.start()]
    lines = [ln for ln in text.split("\n") if not ln.lstrip().startswith(">")]
    text = "\n".join(lines)
    sig = _SIGNATURE.search(text)
    if sig and sig.start() > 0 and len(text) - sig.start() < 300:
        text = text[: sig.start()]
    if subject.strip():
        text = f"{unicodedata.normalize('NFKC', subject).strip()}. {text}"
    return " ".join(_SPACES.sub(" ", text).split())


def detect_language(text: str) -> str:
    """Guess the language from common words; 'und' when there is too little to tell."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 2:
        return "und"
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else "und"


def find_sensitive(text: str) -> list[dict[str, object]]:
    """Card numbers (Luhn-valid), e-mail addresses and phone numbers, as spans of `text`."""
    spans: list[dict[str, object]] = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            spans.append({"type": "card_number", "start": m.start(), "end": m.end()})
    for m in _EMAIL.finditer(text):
        spans.append({"type": "email", "start": m.start(), "end": m.end()})
    taken = [(s["start"], s["end"]) for s in spans]
    for m in _PHONE.finditer(text):
        overlaps = any(a < m.end() and m.start() < b for a, b in taken)  # type: ignore[operator]
        if not overlaps and len(re.sub(r"\D", "", m.group())) >= 9:
            spans.append({"type": "phone", "start": m.start(), "end": m.end()})
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
        "wants_human": bool(_WANTS_HUMAN.search(text)),
        "chars": len(text),
    }
    if not re.search(r"[^\W_]", text):
        output["problem"] = "no words left after removing quotes and signatures"
        return StageResult(output=output, confidence=0.0, escalate="stage_failed")
    return StageResult(output=output, confidence=1.0)
