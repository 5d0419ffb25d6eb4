"""Request validation, token counting and deterministic answers.

Pure functions only (no I/O, no clock, no global state), so tests can call
``simulate_reply(params)`` to predict exactly what the server will answer.

Nothing here models language understanding: answers are a deterministic
function of the request text (a hash plus a crude keyword overlap), and say
nothing about the quality of a real model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MARKER_RE = re.compile(r"\[\[([A-Za-z0-9_.\-]+):(.*?)\]\]", re.S)

# Top-level fields of POST /v1/messages that the installed SDK (2.12.0) can
# send, plus the sampling parameters the wire API has historically accepted.
MESSAGE_FIELDS = {
    "max_tokens",
    "messages",
    "model",
    "cache_control",
    "container",
    "diagnostics",
    "inference_geo",
    "metadata",
    "output_config",
    "service_tier",
    "speed",
    "stop_sequences",
    "stream",
    "system",
    "thinking",
    "tool_choice",
    "tools",
    "user_profile_id",
    "temperature",
    "top_p",
    "top_k",
}
COUNT_TOKENS_FIELDS = {
    "messages",
    "model",
    "cache_control",
    "output_config",
    "speed",
    "system",
    "thinking",
    "tool_choice",
    "tools",
}

_STOPWORDS = {
    "a",
    "an",
    "the",
    "to",
    "of",
    "or",
    "and",
    "by",
    "in",
    "on",
    "for",
    "is",
    "my",
    "i",
    "with",
    "from",
    "at",
    "it",
    "not",
    "be",
    "me",
    "do",
    "you",
    "your",
    "this",
    "that",
    "can",
    "are",
}

_WORDS = (
    "thanks for reaching out we have looked into your request and the account shows the "
    "latest update our team will follow up shortly please confirm the details so we can "
    "resolve this quickly the payment card transfer balance refund order delivery status "
    "has been reviewed and everything appears to be in order let us know if anything else "
    "comes up we are happy to help with the next steps today"
).split()


class InvalidRequest(Exception):
    """Raised for a request the real API would answer with 400 invalid_request_error."""

    def __init__(self, message: str, status: int = 400, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def validate_message_params(body: Any, *, count_tokens: bool = False) -> dict[str, Any]:
    """Validate a /v1/messages (or count_tokens) body like the real API does.

    Raises InvalidRequest with a message in the real API's style
    (``"max_tokens: Field required"``).
    """
    if not isinstance(body, dict):
        raise InvalidRequest("Input should be a valid dictionary or object to extract fields from")
    allowed = COUNT_TOKENS_FIELDS if count_tokens else MESSAGE_FIELDS
    required = ("model", "messages") if count_tokens else ("model", "max_tokens", "messages")
    for name in required:
        if name not in body or body[name] is None:
            raise InvalidRequest(f"{name}: Field required")
    for name in body:
        if name not in allowed:
            raise InvalidRequest(f"{name}: Extra inputs are not permitted")
    model = body["model"]
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: Input should be a valid string")
    if not count_tokens:
        mt = body["max_tokens"]
        if isinstance(mt, bool) or not isinstance(mt, int):
            raise InvalidRequest("max_tokens: Input should be a valid integer")
        if mt < 0:
            raise InvalidRequest("max_tokens: Input should be greater than or equal to 0")
    msgs = body["messages"]
    if not isinstance(msgs, list):
        raise InvalidRequest("messages: Input should be a valid list")
    if not msgs:
        raise InvalidRequest("messages: at least one message is required")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages.{i}: Input should be a valid dictionary")
        if m.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in m:
            raise InvalidRequest(f"messages.{i}.content: Field required")
        c = m["content"]
        if isinstance(c, list):
            for j, b in enumerate(c):
                if not isinstance(b, dict) or "type" not in b:
                    raise InvalidRequest(f"messages.{i}.content.{j}: Input should be a valid content block")
                if b["type"] == "text" and not isinstance(b.get("text"), str):
                    raise InvalidRequest(f"messages.{i}.content.{j}.text: Field required")
        elif not isinstance(c, str):
            raise InvalidRequest(f"messages.{i}.content: Input should be a valid string or list of content blocks")
    if msgs[0].get("role") != "user" and not count_tokens:
        # The real API accepts a leading assistant turn in some cases; we keep it simple.
        pass
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise InvalidRequest("system: Input should be a valid string or list of text blocks")
    if isinstance(system, list):
        for j, b in enumerate(system):
            if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
                raise InvalidRequest(f"system.{j}: Input should be a valid text block")
    oc = body.get("output_config")
    if oc is not None:
        if not isinstance(oc, dict):
            raise InvalidRequest("output_config: Input should be a valid dictionary")
        fmt = oc.get("format")
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
                raise InvalidRequest("output_config.format.type: Input should be 'json_schema'")
            if not isinstance(fmt.get("schema"), dict):
                raise InvalidRequest("output_config.format.schema: Field required")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools: Input should be a valid list")
        for j, t in enumerate(tools):
            if not isinstance(t, dict) or not t.get("name"):
                raise InvalidRequest(f"tools.{j}.name: Field required")
    tc = body.get("tool_choice")
    if tc is not None:
        if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none"):
            raise InvalidRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if tc["type"] == "tool":
            names = [t.get("name") for t in (tools or [])]
            if tc.get("name") not in names:
                raise InvalidRequest(f"tool_choice: tool {tc.get('name')!r} not found in tools")
    ss = body.get("stop_sequences")
    if ss is not None and (not isinstance(ss, list) or not all(isinstance(s, str) for s in ss)):
        raise InvalidRequest("stop_sequences: Input should be a valid list of strings")
    return body


# ---------------------------------------------------------------------------
# token counting and prompt-cache prefixes
# ---------------------------------------------------------------------------


def approx_tokens(chars: int) -> int:
    return int(math.ceil(chars / 4.0)) if chars > 0 else 0


def _block_chars(block: Any) -> int:
    if isinstance(block, str):
        return len(block)
    if not isinstance(block, dict):
        return len(json.dumps(block, default=str))
    t = block.get("type")
    if t == "text":
        return len(block.get("text", ""))
    if t in ("image", "document"):
        src = block.get("source") or {}
        if src.get("type") == "text":
            return len(str(src.get("data", "")))
        return 1600 * 4  # images/PDF pages: a flat ~1600 tokens
    if t == "tool_use":
        return len(block.get("name", "")) + len(json.dumps(block.get("input", {}), sort_keys=True))
    if t == "tool_result":
        c = block.get("content")
        if isinstance(c, list):
            return sum(_block_chars(b) for b in c) + 8
        return len(str(c or "")) + 8
    if t in ("thinking", "redacted_thinking"):
        return len(str(block.get("thinking", block.get("data", ""))))
    return len(json.dumps(block, sort_keys=True, default=str))


def _canon(obj: Any) -> str:
    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k != "cache_control"}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return json.dumps(strip(obj), sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class Segment:
    tokens: int
    canon: str
    cache_control: dict | None = None


def prompt_segments(params: dict[str, Any]) -> list[Segment]:
    """The request's prompt as cacheable segments, in the API's cache order:
    tools, then system blocks, then message content blocks."""
    segs: list[Segment] = []
    for t in params.get("tools") or []:
        segs.append(Segment(approx_tokens(len(_canon(t))), "tool:" + _canon(t), t.get("cache_control")))
    system = params.get("system")
    if isinstance(system, str) and system:
        segs.append(Segment(approx_tokens(len(system)), "system:" + system, None))
    elif isinstance(system, list):
        for b in system:
            segs.append(Segment(approx_tokens(_block_chars(b)), "system:" + _canon(b), b.get("cache_control")))
    for m in params.get("messages") or []:
        c = m.get("content")
        blocks = [{"type": "text", "text": c}] if isinstance(c, str) else list(c or [])
        for j, b in enumerate(blocks):
            overhead = 3 if j == 0 else 0
            cc = b.get("cache_control") if isinstance(b, dict) else None
            segs.append(Segment(approx_tokens(_block_chars(b)) + overhead, m.get("role", "") + ":" + _canon(b), cc))
        if not blocks:
            segs.append(Segment(3, m.get("role", "") + ":", None))
    # Top-level cache_control: applies a breakpoint to the last cacheable block.
    top_cc = params.get("cache_control")
    if top_cc and segs and segs[-1].cache_control is None:
        segs[-1].cache_control = dict(top_cc)
    return segs


def extra_input_tokens(params: dict[str, Any]) -> int:
    """Input tokens that are not part of any cacheable prefix (schema prompt)."""
    fmt = (params.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        return approx_tokens(len(json.dumps(fmt["schema"], sort_keys=True))) + 20
    return 0


def count_input_tokens(params: dict[str, Any], segments: list[Segment] | None = None) -> int:
    segs = prompt_segments(params) if segments is None else segments
    total = sum(s.tokens for s in segs) + extra_input_tokens(params)
    return max(1, total)


@dataclass
class CacheBreakpoint:
    key: str
    tokens: int  # tokens in the prefix up to and including this block
    ttl: float  # seconds
    ttl_class: str = "5m"  # the block's declared ttl ("5m" or "1h"), for usage.cache_creation


def cache_breakpoints(
    params: dict[str, Any], *, ttl_override: float | None = None, segments: list[Segment] | None = None
) -> list[CacheBreakpoint]:
    segs = prompt_segments(params) if segments is None else segments
    if not any(s.cache_control for s in segs):
        return []
    h = hashlib.sha256(("model:" + str(params.get("model"))).encode())
    running = 0
    out: list[CacheBreakpoint] = []
    for s in segs:
        h.update(b"\x00" + s.canon.encode("utf-8", "surrogatepass"))
        running += s.tokens
        if s.cache_control and s.cache_control.get("type") == "ephemeral":
            ttl_class = "1h" if s.cache_control.get("ttl") == "1h" else "5m"
            ttl = 3600.0 if ttl_class == "1h" else 300.0
            if ttl_override is not None:
                ttl = float(ttl_override)
            out.append(CacheBreakpoint(h.hexdigest(), running, ttl, ttl_class))
    return out[-4:]  # the API allows at most 4 breakpoints


# ---------------------------------------------------------------------------
# deterministic answers
# ---------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for b in content or []:
        if isinstance(b, dict):
            if b.get("type") == "text":
                parts.append(str(b.get("text", "")))
            elif b.get("type") == "tool_result":
                c = b.get("content")
                parts.append(_text_of(c) if isinstance(c, list) else str(c or ""))
    return "\n".join(parts)


def last_user_text(params: dict[str, Any]) -> str:
    for m in reversed(params.get("messages") or []):
        if m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def parse_markers(text: str) -> tuple[dict[str, str], str]:
    """``[[key:value]]`` markers in the text, and the text without them."""
    markers: dict[str, str] = {}
    for k, v in MARKER_RE.findall(text):
        markers.setdefault(k.strip().lower(), v.strip())
    return markers, MARKER_RE.sub(" ", text)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _token_match(tok: str, words: Sequence[str]) -> bool:
    for w in words:
        if w == tok:
            return True
        if len(tok) >= 4 and len(w) >= 4:
            n = min(len(tok), len(w), 5)
            if w[:n] == tok[:n] and (n >= 5 or len(tok) == n or len(w) == n):
                return True
    return False


def rank_enum_by_overlap(options: Sequence[Any], text: str) -> tuple[Any, float]:
    """Pick the enum option whose name (split on ``_``/``-``/space) best
    overlaps the words of ``text``; ties and no-overlap fall back to a hash of
    the text. Returns (option, match_fraction) where match_fraction is 0 when
    nothing matched."""
    words = set(_words(text))
    digest = _digest(text)
    best: tuple[tuple[int, float, int], Any, float] | None = None
    for opt in options:
        toks = [t for t in re.split(r"[_\-\s/]+", str(opt).lower()) if t and t not in _STOPWORDS]
        if not toks:
            toks = [str(opt).lower()]
        matched = sum(1 for t in toks if _token_match(t, words))
        frac = matched / len(toks)
        tiebreak = int.from_bytes(hashlib.sha256(digest + str(opt).encode()).digest()[:4], "big")
        key = (matched, frac, tiebreak)
        if best is None or key > best[0]:
            best = (key, opt, frac)
    assert best is not None
    if best[0][0] == 0:
        opt = options[int.from_bytes(digest[:4], "big") % len(options)]
        return opt, 0.0
    return best[1], best[2]


@functools.lru_cache(maxsize=4096)
def _free_text(digest: bytes, n_words: int) -> str:
    rng = random.Random(digest)
    words = rng.choices(_WORDS, k=n_words)
    out: list[str] = []
    i = 0
    while i < n_words:
        k = 6 + int(rng.random() * 7)  # sentences of 6-12 words
        out.append(" ".join(words[i : i + k]).capitalize() + ".")
        i += k
    return " ".join(out)


class SchemaGenerator:
    """Builds a JSON value valid for a (JSON Schema) structured-output schema."""

    def __init__(self, root: dict[str, Any], text: str, markers: dict[str, str], digest: bytes):
        self.root = root
        self.text = text
        self.markers = markers
        self.rng = random.Random(digest)
        self.digest = digest
        self.match_fraction: float | None = None

    def resolve(self, schema: Any, depth: int = 0) -> dict[str, Any]:
        if not isinstance(schema, dict):
            return {}
        while "$ref" in schema and depth < 50:
            ref = schema["$ref"]
            target: Any = self.root
            if not ref.startswith("#"):
                return {k: v for k, v in schema.items() if k != "$ref"}
            for part in [p for p in ref[1:].split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part, {}) if isinstance(target, dict) else {}
            merged = dict(target) if isinstance(target, dict) else {}
            merged.update({k: v for k, v in schema.items() if k != "$ref"})
            schema = merged
            depth += 1
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                sub = self.resolve(sub, depth + 1)
                for k, v in sub.items():
                    if k == "properties":
                        merged.setdefault("properties", {}).update(v)
                    elif k == "required":
                        merged["required"] = list(dict.fromkeys(list(merged.get("required", [])) + list(v)))
                    else:
                        merged.setdefault(k, v)
            schema = merged
        return schema

    def generate(self, schema: Any, name: str = "", depth: int = 0) -> Any:
        s = self.resolve(schema)
        if depth > 12:
            return None
        if "const" in s:
            return s["const"]
        override = self.markers.get(name.lower()) if name else None
        if "enum" in s and isinstance(s["enum"], list) and s["enum"]:
            return self._enum(s["enum"], override)
        for key in ("anyOf", "oneOf"):
            if key in s and s[key]:
                opts = [self.resolve(o) for o in s[key]]
                non_null = [o for o in opts if o.get("type") != "null"]
                if override is not None and override.lower() == "null" and len(non_null) < len(opts):
                    return None
                pick = non_null[0] if non_null else opts[0]
                return self.generate(pick, name, depth + 1)
        t = s.get("type")
        if isinstance(t, list):
            non_null = [x for x in t if x != "null"]
            if override is not None and override.lower() == "null" and "null" in t:
                return None
            t = non_null[0] if non_null else "null"
        if t is None:
            if "properties" in s:
                t = "object"
            elif "items" in s:
                t = "array"
            else:
                t = "string"
        if t == "object":
            return self._object(s, depth)
        if t == "array":
            return self._array(s, name, depth)
        if t == "string":
            return self._string(s, name, override)
        if t in ("number", "integer"):
            return self._number(s, name, override, integer=(t == "integer"))
        if t == "boolean":
            if override is not None:
                return override.lower() in ("1", "true", "yes", "y")
            return bool(self.rng.getrandbits(1))
        if t == "null":
            return None
        return None

    def _enum(self, options: list[Any], override: str | None) -> Any:
        if override is not None:
            for o in options:
                if str(o) == override:
                    return o
            for o in options:
                if str(o).lower() == override.lower():
                    return o
        strs = [o for o in options if isinstance(o, str)]
        if len(strs) == len(options):
            opt, frac = rank_enum_by_overlap(options, self.text)
            if self.match_fraction is None:
                self.match_fraction = frac
            return opt
        return options[int.from_bytes(self.digest[:4], "big") % len(options)]

    def _object(self, s: dict[str, Any], depth: int) -> dict[str, Any]:
        props = s.get("properties") or {}
        out: dict[str, Any] = {}
        # Enum-like properties first, so confidence can depend on the match.
        order = sorted(props, key=lambda k: 0 if "enum" in self.resolve(props[k]) else 1)
        for k in order:
            out[k] = self.generate(props[k], k, depth + 1)
        return {k: out[k] for k in props}  # keep schema order

    def _array(self, s: dict[str, Any], name: str, depth: int) -> list[Any]:
        lo = int(s.get("minItems", 0) or 0)
        hi = s.get("maxItems")
        n = max(lo, 1)
        if hi is not None:
            n = min(n, int(hi))
        prefix = s.get("prefixItems") or []
        items = s.get("items", {})
        out = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else (items if isinstance(items, dict) else {})
            out.append(self.generate(sub, "", depth + 1))
        return out

    def _string(self, s: dict[str, Any], name: str, override: str | None) -> str:
        if override is not None:
            val = override
        else:
            fmt = s.get("format")
            if fmt == "date-time":
                val = "2025-01-01T00:00:00Z"
            elif fmt == "date":
                val = "2025-01-01"
            elif fmt == "time":
                val = "00:00:00"
            elif fmt == "email":
                val = "customer@example.com"
            elif fmt == "uuid":
                h = hashlib.sha256(self.digest + name.encode()).hexdigest()
                val = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
            elif fmt in ("uri", "url"):
                val = "https://example.com/"
            else:
                n_words = (
                    3
                    if not any(
                        x in name.lower()
                        for x in (
                            "reason",
                            "explan",
                            "summary",
                            "reply",
                            "response",
                            "answer",
                            "message",
                            "rational",
                            "draft",
                            "note",
                            "text",
                        )
                    )
                    else 12
                )
                val = _free_text(hashlib.sha256(self.digest + name.encode()).digest(), n_words)
        lo = int(s.get("minLength", 0) or 0)
        hi = s.get("maxLength")
        if len(val) < lo:
            val = val + "x" * (lo - len(val))
        if hi is not None and len(val) > int(hi):
            val = val[: int(hi)]
        return val

    def _number(self, s: dict[str, Any], name: str, override: str | None, integer: bool) -> Any:
        lo = s.get("minimum")
        hi = s.get("maximum")
        xlo = s.get("exclusiveMinimum")
        xhi = s.get("exclusiveMaximum")
        val: float | None = None
        if override is not None:
            try:
                val = float(override)
            except ValueError:
                val = None
        lname = name.lower()
        if val is None:
            if any(x in lname for x in ("confidence", "probab", "score", "certainty")):
                frac = self.match_fraction
                jitter = int.from_bytes(hashlib.sha256(self.digest + b"conf").digest()[:2], "big") / 65535.0
                if frac is None:
                    val = 0.5 + 0.45 * jitter
                elif frac > 0:
                    val = 0.7 + 0.25 * frac * (0.6 + 0.4 * jitter)
                else:
                    val = 0.3 + 0.3 * jitter
                val = round(val, 2)
                if hi is not None and float(hi) > 1.0 and (lo is None or float(lo) >= 0):
                    val = val * float(hi)
            else:
                a = float(lo if lo is not None else (xlo if xlo is not None else 0))
                b = float(hi if hi is not None else (xhi if xhi is not None else a + 100))
                val = a + (b - a) * self.rng.random()
        if integer:
            val = float(int(round(val)))
        # clamp into range
        if lo is not None:
            val = max(val, float(lo))
        if hi is not None:
            val = min(val, float(hi))
        if xlo is not None and val <= float(xlo):
            val = float(xlo) + (1 if integer else 1e-6)
        if xhi is not None and val >= float(xhi):
            val = float(xhi) - (1 if integer else 1e-6)
        mult = s.get("multipleOf")
        if mult:
            val = round(val / float(mult)) * float(mult)
        return int(val) if integer else val


@dataclass
class Reply:
    content: list[dict[str, Any]]
    stop_reason: str
    output_tokens: int
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(b.get("text", "") for b in self.content if b.get("type") == "text")


def output_schema(params: dict[str, Any]) -> dict[str, Any] | None:
    fmt = (params.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return fmt["schema"]
    return None


def _tool_use_id(digest: bytes) -> str:
    return "toolu_sim" + hashlib.sha256(digest + b"tool").hexdigest()[:20]


def simulate_reply(params: dict[str, Any], *, fault: str | None = None) -> Reply:
    """The deterministic answer to a (validated) /v1/messages request.

    ``fault`` may be ``"truncated"`` or ``"refusal"`` to get the faulty
    variant of the answer.
    """
    raw = last_user_text(params)
    markers, clean = parse_markers(raw)
    digest = _digest(raw)
    max_tokens = int(params.get("max_tokens", 1024))

    if fault == "refusal":
        return Reply(
            content=[],
            stop_reason="refusal",
            output_tokens=4,
            markers=markers,
            stop_details={
                "type": "refusal",
                "category": None,
                "explanation": "The simulator was configured to refuse this request.",
            },
        )

    tools = params.get("tools") or []
    tc = params.get("tool_choice") or {}
    tool_name: str | None = None
    if tools and tc.get("type") != "none":
        if tc.get("type") == "tool":
            tool_name = tc.get("name")
        elif tc.get("type") == "any":
            tool_name = markers.get("tool") or tools[0].get("name")
        elif "tool" in markers:
            tool_name = markers["tool"]
        if tool_name is not None and not any(t.get("name") == tool_name for t in tools):
            tool_name = None

    if tool_name is not None:
        tool = next(t for t in tools if t.get("name") == tool_name)
        schema = tool.get("input_schema") or {"type": "object"}
        value = SchemaGenerator(schema, clean, markers, digest).generate(schema)
        if not isinstance(value, dict):
            value = {"value": value}
        block = {"type": "tool_use", "id": _tool_use_id(digest), "name": tool_name, "input": value}
        out_tokens = max(1, approx_tokens(len(json.dumps(value))) + 10)
        return Reply(content=[block], stop_reason="tool_use", output_tokens=out_tokens, markers=markers)

    schema = output_schema(params)
    if "reply" in markers:
        text = markers["reply"]
    elif schema is not None:
        text = json.dumps(SchemaGenerator(schema, clean, markers, digest).generate(schema), ensure_ascii=False)
    else:
        n = 12 + digest[0] % 40
        if "words" in markers:
            try:
                n = max(0, int(markers["words"]))
            except ValueError:
                pass
        text = _free_text(digest, n)

    stop_reason = "end_turn"
    stop_sequence = None
    for seq in params.get("stop_sequences") or []:
        if seq and seq in text:
            text = text[: text.index(seq)]
            stop_reason, stop_sequence = "stop_sequence", seq
    out_tokens = max(1, approx_tokens(len(text)))
    if fault == "truncated":
        cut = max(1, len(text) // 2)
        text = text[:cut]
        out_tokens = max(1, min(max_tokens, approx_tokens(len(text)))) if max_tokens > 0 else 0
        stop_reason, stop_sequence = "max_tokens", None
        if max_tokens > approx_tokens(len(text)):
            out_tokens = max_tokens  # the model "ran out" of its budget
    elif out_tokens > max_tokens:
        text = text[: max_tokens * 4]
        out_tokens = max_tokens
        stop_reason, stop_sequence = "max_tokens", None
    if max_tokens == 0:
        return Reply(content=[], stop_reason="max_tokens", output_tokens=0, markers=markers)
    return Reply(
        content=[{"type": "text", "text": text}],
        stop_reason=stop_reason,
        output_tokens=out_tokens,
        stop_sequence=stop_sequence,
        markers=markers,
    )
