"""The model-client contract: what the tier, drafting and batches may ask of a model provider."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.stages.types import StageError


class ModelError(StageError):
    """A call failed. Transient ones (`permanent=False`) are retried by the pipeline's Celery retry.

    A `StageError`, so one that escapes a stage is retried or dead-lettered like any stage failure.
    """

    deferred = False  # True when nothing failed: the call was only put off (the limiter was busy)


class LimiterBusy(ModelError):
    """The shared rate limit (or a provider's pause) has no room within the wait a thread may spend."""

    deferred = True

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message, permanent=False, retry_after=retry_after)


class ModelUnavailable(Exception):
    """The provider refuses service for longer than a retry is worth (a spend limit): ask a person."""


@dataclass(frozen=True)
class Usage:
    """Tokens one call used. `input_tokens` excludes the prompt-cache writes and reads."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def limited_input(self) -> int:
        """What counts against input tokens per minute: cache reads are free of the limit."""
        return self.input_tokens + self.cache_write_tokens


@dataclass(frozen=True)
class ModelRequest:
    """One question: a system prompt (optionally marked for prompt caching), messages, a schema."""

    model_class: str
    model: str
    messages: Sequence[Mapping[str, Any]]
    max_tokens: int
    system: str = ""
    cache_system: bool = False
    json_schema: Mapping[str, Any] | None = None
    expected_output_tokens: int = 0  # what the limiter reserves; corrected by the real usage
    max_wait: float | None = None  # the longest to wait for the limiter (None: MAX_WAIT_SECONDS)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelReply:
    """What the model said, untouched: a refusal or a truncated text is a reply, not an error."""

    text: str
    stop_reason: str
    model: str
    usage: Usage
    request_id: str = ""


@dataclass(frozen=True)
class BatchItem:
    """One result of a batch, matched to its request by `custom_id`; `reply` None when it errored."""

    custom_id: str
    reply: ModelReply | None
    error: str = ""


class ModelClient:
    """A model provider, as the Claude tier uses it. Settings name the implementation.

    `complete()` makes exactly one call, inside the shared rate limits, and returns the reply
    verbatim. It never retries and never interprets the answer (the caller checks refusals,
    truncation and schema). It raises:

    - `LimiterBusy` when the shared limiter (or a provider's 429 pause) has no room soon enough;
    - `ModelError(permanent=False, retry_after=...)` for a transient failure: 429, 5xx, 529,
      a timeout, a dropped connection, an unreadable response;
    - `ModelError(permanent=True)` for a request the provider will never accept (400, 401, 403, ...);
    - `ModelUnavailable` when the account may not be used for a while (spend limit reached).

    The batch methods send many non-urgent requests at the batch price; results come back in
    any order and are matched by `custom_id`.
    """

    def complete(self, request: ModelRequest) -> ModelReply:
        """Ask once; see the class docstring for what it raises."""
        raise NotImplementedError

    def available(self) -> bool:
        """False while the provider refuses service (after a spend limit): callers skip the model."""
        return True

    def batch_submit(self, requests: Iterable[tuple[str, ModelRequest]]) -> str:
        """Submit `(custom_id, request)` pairs as one batch; return the batch id."""
        raise NotImplementedError

    def batch_ended(self, batch_id: str) -> bool:
        """Whether the batch has finished processing (its results can be read)."""
        raise NotImplementedError

    def batch_results(self, batch_id: str) -> Iterator[BatchItem]:
        """The results of an ended batch."""
        raise NotImplementedError
