"""The contract between the pipeline and its stages: plain data in, plain data out.

A stage is a pure function `stage(ticket: TicketInput, ctx: StageContext) -> StageResult`: no ORM,
no Celery. Whatever it needs from outside (model tiers, tools) arrives in `ctx`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class StageError(Exception):
    """A stage could not finish. Transient errors are retried; permanent ones dead-letter."""

    deferred = False  # True when nothing failed: the call was only put off (not an attempt)

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class TicketInput:
    """What a stage may read of a ticket, including earlier stages' outputs in `context`."""

    id: str
    client_id: int
    customer_ref: str
    channel: str
    subject: str
    body: str
    priority: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IntentPolicy:
    """An intent as the stages see it (loaded from the pack / the Intent table)."""

    name: str
    description: str = ""
    threshold: float = 0.9
    allowed_actions: tuple[str, ...] = ("reply",)
    reply_template: str = ""
    risk: str = "low"
    always_review: bool = False
    webhook_url: str = ""
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class TierAnswer:
    """One classifier tier's answer for one text."""

    intent: str
    confidence: float
    tier: str
    model: str = ""
    alternatives: tuple[tuple[str, float], ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: bool = False


class ClassifierTier(Protocol):
    """A way to guess an intent; tiers are tried cheapest first."""

    name: str

    def classify(self, text: str, catalog: Mapping[str, IntentPolicy]) -> TierAnswer | None: ...


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned; `replayed` when the ledger already held it."""

    tool: str
    ok: bool
    data: Mapping[str, Any] = field(default_factory=dict)
    replayed: bool = False


# Tools that never leave the process (a reply is recorded in the ledger and sent from there): an
# execute whose plan uses only these may run in the same hop as the cheap stages.
OFFLINE_TOOLS = frozenset({"reply"})


class ToolRunner(Protocol):
    """Runs a side effect at most once per idempotency key."""

    def run(self, tool: str, arguments: Mapping[str, Any], *, idempotency_key: str) -> ToolResult: ...


# A stage's two variants: CHEAP on the stage's own queue (rules, the local model), CLAUDE when re-run on
# the claude worker's queue with the network-bound tier. A cheap run that hands over stores its output in
# the ticket's context under `cheap_output(stage)`, beside the stages' outputs under their own names.
CHEAP, CLAUDE = "cheap", "claude"


# The context's keys besides the stages' outputs (each under its stage's name): a person's decision, and
# why the ticket was escalated (the stage and the reason, for the escalate stage's holding reply).
HUMAN, ESCALATION = "human", "escalation"


def cheap_output(stage: str) -> str:
    """The context key of a stage's cheap output once it handed the stage over to Claude."""
    return f"{stage}_cheap"


@dataclass
class StageContext:
    """What the outside world lends a stage."""

    catalog: Mapping[str, IntentPolicy] = field(default_factory=dict)
    tiers: Sequence[ClassifierTier] = ()
    tools: ToolRunner | None = None
    history: Sequence[Mapping[str, Any]] = ()
    holding_reply: str = ""
    attempt: int = 1
    # CHEAP or CLAUDE (above). `can_handoff` says a Claude variant is configured to hand over to.
    variant: str = CHEAP
    can_handoff: bool = False
    # Claude drafting a reply (agents.llm.drafting.draft_reply over the model client), CLAUDE variant.
    draft: Any = None
    scope: Any = None  # the ticket as the Claude tier may know it (agents.llm.scope.TicketScope), CLAUDE variant


@dataclass
class StageResult:
    """A stage's output and confidence, plus the accounting a trace row records."""

    output: dict[str, Any]
    confidence: float | None = None
    escalate: str | None = None  # a review reason when the ticket needs a person
    handoff: str | None = None  # CLAUDE: persist this output, re-run the stage on the claude worker's queue
    tier: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit: bool = False


StageFn = Callable[[TicketInput, StageContext], StageResult]
