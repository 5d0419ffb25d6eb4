"""`ModelClient` over the `anthropic` 2.x SDK: one call, inside the shared limits, no SDK retries.

What 2.x changed and this module relies on: structured output is `output_config={"format":
{"type": "json_schema", "schema": ...}}` (there is no `temperature`); 529 is `OverloadedError`, a
subclass of `InternalServerError`; a spend-limit 429 is `EnforcedSpendLimitReachedError` /
`ContractSpendLimitReachedError` (subclasses of `RateLimitError`) and is not transient; an HTTP 200
whose body is cut short raises `json.JSONDecodeError` (a `ValueError`, not an `APIError`).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import anthropic
from django.conf import settings

from agents.llm.base import BatchItem, ModelClient, ModelError, ModelReply, ModelRequest, ModelUnavailable, Usage
from agents.llm.config import llm_settings
from agents.llm.limiter import RateLimiter
from agents.llm.store import key, redis_client
from project.netguard.deadline import model_http_client

log = logging.getLogger(__name__)

SPEND_LIMIT_ERRORS = (anthropic.EnforcedSpendLimitReachedError, anthropic.ContractSpendLimitReachedError)
TRANSIENT_STATUS = frozenset({408, 409, 425})  # besides 429 and every 5xx (529 overloaded included)


def estimate_input_tokens(params: Mapping[str, Any]) -> int:
    """A generous estimate (about 3.5 characters a token) of what a request will count as input."""
    chars = len(json.dumps(params.get("system", ""))) + len(json.dumps(params.get("messages", [])))
    chars += len(json.dumps(params.get("output_config", {})))
    return math.ceil(chars / 3.5) + 10 + 3 * len(params.get("messages", []))


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds or an HTTP date), when present."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def is_spend_limit(exc: anthropic.RateLimitError) -> bool:
    """A 429 that will not clear by waiting a few seconds: the account's spend limit."""
    if isinstance(exc, SPEND_LIMIT_ERRORS) or (exc.error_code or "").endswith("spend_limit_reached"):
        return True
    headers = exc.response.headers
    return headers.get("x-should-retry") == "false" and retry_after_seconds(headers) is None


def reply_from(message: Any) -> ModelReply:
    """A `ModelReply` from the SDK's `Message`."""
    usage = message.usage
    return ModelReply(
        text="".join(getattr(block, "text", "") for block in message.content if block.type == "text"),
        stop_reason=message.stop_reason or "",
        model=message.model,
        usage=Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
        ),
        request_id=getattr(message, "_request_id", None) or "",
    )


class AnthropicClient(ModelClient):
    """The Messages API through the official SDK (`base_url` from settings points it at the simulator)."""

    def __init__(
        self, *, api_key: str | None = None, base_url: str | None = None, limiter: RateLimiter | None = None
    ) -> None:
        cfg = llm_settings()
        self.sdk = anthropic.Anthropic(
            api_key=api_key or settings.ANTHROPIC_API_KEY,
            base_url=base_url or settings.ANTHROPIC_BASE_URL or None,
            max_retries=int(cfg["SDK_MAX_RETRIES"]),
            timeout=float(cfg["TIMEOUT_SECONDS"]),
            # The llm queue runs on threads, where Celery's time limits do not fire: each call ends
            # within TIMEOUT_SECONDS in all, a provider (or proxy) that trickles its answer included.
            http_client=model_http_client(timeout=float(cfg["TIMEOUT_SECONDS"])),
        )
        self.limiter = limiter or RateLimiter()

    @staticmethod
    def params(request: ModelRequest) -> dict[str, Any]:
        """The Messages API body for a request."""
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [dict(m) for m in request.messages],
        }
        if request.system:
            block: dict[str, Any] = {"type": "text", "text": request.system}
            if request.cache_system:
                block["cache_control"] = {"type": "ephemeral"}  # the static catalogue: cached prefix
            params["system"] = [block]
        if request.json_schema is not None:
            params["output_config"] = {"format": {"type": "json_schema", "schema": dict(request.json_schema)}}
        if request.metadata:
            params["metadata"] = dict(request.metadata)
        return params

    def available(self) -> bool:
        return not redis_client().exists(key("unavailable"))

    def complete(self, request: ModelRequest) -> ModelReply:
        params = self.params(request)
        estimate_out = min(request.max_tokens, request.expected_output_tokens or request.max_tokens)
        lease = self.limiter.acquire(
            request.model_class,
            input_tokens=estimate_input_tokens(params),
            output_tokens=estimate_out,
            max_wait=request.max_wait,
        )
        try:
            raw = self.sdk.messages.with_raw_response.create(**params)
            reply = reply_from(raw.parse())
        except anthropic.APIStatusError as exc:
            self.limiter.settle(lease, headers=exc.response.headers)
            raise self._status_error(request.model_class, exc) from exc
        except anthropic.APIConnectionError as exc:  # timeouts included
            self.limiter.settle(lease)
            raise ModelError(f"{type(exc).__name__}: {exc}", permanent=False) from exc
        except ValueError as exc:  # an HTTP 200 whose JSON body was cut short
            self.limiter.settle(lease)
            raise ModelError(f"unreadable response: {exc}", permanent=False) from exc
        except BaseException:
            self.limiter.settle(lease)
            raise
        self.limiter.settle(lease, used=reply.usage, headers=raw.headers)
        return reply

    def _status_error(self, model_class: str, exc: anthropic.APIStatusError) -> Exception:
        headers = exc.response.headers
        label = f"{exc.status_code} {exc.type or ''} {exc.api_message or ''}".strip()
        if isinstance(exc, anthropic.RateLimitError):
            if is_spend_limit(exc):
                seconds = float(llm_settings()["UNAVAILABLE_SECONDS"])
                redis_client().set(key("unavailable"), label[:500], ex=max(1, int(seconds)))
                log.warning("Claude unavailable for %.0fs: %s", seconds, label)
                return ModelUnavailable(label)
            wait = retry_after_seconds(headers) or 1.0
            self.limiter.pause(model_class, wait)
            return ModelError(label, permanent=False, retry_after=wait)
        transient = exc.status_code >= 500 or exc.status_code in TRANSIENT_STATUS
        return ModelError(
            label, permanent=not transient, retry_after=retry_after_seconds(headers) if transient else None
        )

    def batch_submit(self, requests: Iterable[tuple[str, ModelRequest]]) -> str:
        body = [{"custom_id": custom_id, "params": self.params(req)} for custom_id, req in requests]
        try:
            return self.sdk.messages.batches.create(requests=body).id
        except anthropic.APIStatusError as exc:
            transient = exc.status_code in (429, *TRANSIENT_STATUS) or exc.status_code >= 500
            raise ModelError(f"batch submit: {exc.status_code} {exc.api_message}", permanent=not transient) from exc
        except (anthropic.APIConnectionError, ValueError) as exc:
            raise ModelError(f"batch submit: {exc}", permanent=False) from exc

    def batch_ended(self, batch_id: str) -> bool:
        return self.sdk.messages.batches.retrieve(batch_id).processing_status == "ended"

    def batch_results(self, batch_id: str) -> Iterator[BatchItem]:
        for item in self.sdk.messages.batches.results(batch_id):
            result = item.result
            if result.type == "succeeded":
                yield BatchItem(item.custom_id, reply_from(result.message))
            else:
                detail = getattr(getattr(result, "error", None), "error", None)
                yield BatchItem(item.custom_id, None, error=f"{result.type}: {getattr(detail, 'message', '')}".strip())
