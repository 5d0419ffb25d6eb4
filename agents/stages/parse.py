"""parse: clean, normalise, validate, detect the language, mark what logs must mask."""

from __future__ import annotations

import re

from agents.stages.types import StageContext, StageResult, TicketInput
from project.sensitive import find_sensitive, mask, re2_compile, shadow
from project.textnorm import nfkc

# A request longer than this once normalised is cleaned and classified on its first this many
# characters. The API refuses bodies over TICKET_BODY_MAX_CHARS (20,000) after NFKC already: this
# bounds the work on what came in another way (older rows, an operator's higher limit).
MAX_TEXT_CHARS = 50_000


# RE2, over `shadow(text)`, as project/sensitive.py's scanners: linear in the text whatever it holds.
_QUOTE_HEADER = re2_compile(r"(?im)^\s*(on .{0,200} wrote:|-{2,}\s*original message\s*-{2,}|from: .+)$")
_SIGNATURE = re2_compile(
    r"(?im)(^--\s*$|^sent from my \w+.*$|^(kind |best )?regards,?\s*$|^thanks?( you)?,?\s*$|^cheers,?\s*$)"
)
_CONTROL = {cp: " " for cp in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
_WANTS_HUMAN = re2_compile(
    r"(?i)\b(speak|talk|chat)\s+(to|with)\s+(a|an|some)?\s*(real\s+|actual\s+|live\s+)?"
    r"(human|person|agent|someone|representative|manager)\b|\breal person\b",
)

_STOPWORDS = {
    "en": {"the", "my", "is", "i", "to", "a", "and", "you", "it", "card", "what", "how", "can", "have"},
    "es": {"el", "la", "mi", "es", "que", "de", "y", "no", "tarjeta", "por", "para", "una", "como"},
    "fr": {"le", "la", "mon", "ma", "est", "je", "et", "pas", "carte", "pour", "une", "comment", "vous"},
    "de": {"der", "die", "das", "mein", "meine", "ist", "ich", "und", "nicht", "karte", "wie", "eine"},
    "pt": {"o", "a", "meu", "minha", "é", "que", "de", "e", "não", "cartão", "para", "uma", "como"},
    "it": {"il", "la", "mio", "mia", "è", "che", "di", "e", "non", "carta", "per", "una", "come"},
}


def clean(subject: str, body: str) -> str:
    """Normalise unicode and whitespace; drop quoted replies and signatures."""
    text = nfkc(body)[:MAX_TEXT_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_CONTROL)
    header = _QUOTE_HEADER.search(shadow(text))
    if header:
        text = text[: header.start()]
    lines = [ln for ln in text.split("\n") if not ln.lstrip().startswith(">")]
    text = "\n".join(lines)
    sig = _SIGNATURE.search(shadow(text))
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


def parse(ticket: TicketInput, ctx: StageContext) -> StageResult:
    """Clean the request and mark what is sensitive; escalate what has no words left."""
    text = clean(ticket.subject, ticket.body)
    spans = find_sensitive(text)
    output = {
        "text": text,
        "masked": mask(text, spans),
        "sensitive": spans,
        "language": detect_language(text),
        "wants_human": bool(_WANTS_HUMAN.search(shadow(text))),
        "chars": len(text),
    }
    if not re.search(r"[^\W_]", text):
        output["problem"] = "no words left after removing quotes and signatures"
        return StageResult(output=output, confidence=0.0, escalate="stage_failed")
    return StageResult(output=output, confidence=1.0)
