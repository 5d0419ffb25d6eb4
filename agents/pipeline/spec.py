"""The stages, declared once. Everything else — the Celery tasks and their routes, the queues, the
status maps, the order a fused hop follows, the lists of stages in logging, metrics and tests — is
derived from `STAGES`. Adding a stage is one entry here plus one pure function in `agents/stages/`.

Importable before Django's apps are ready (celeryconfig reads it): no models here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents.llm.handoff import LLM_QUEUE, LLM_TASK  # noqa: F401 - LLM_TASK: named here with the stages
from agents.stages import classify, decide, escalate, execute, parse
from agents.stages.types import CHEAP, CLAUDE, HUMAN, OFFLINE_TOOLS, StageFn, StageResult, cheap_output
from tickets.states import SETTLED_STATUSES, TERMINAL, IllegalTransition, Status

# The trace row of a person's decision carries this in place of a stage's name (agents/pipeline/human.py).
REVIEW = "review"

# The worker roles (the Procfile, compose and the chart start each with `python -m agents.pipeline.worker
# ROLE`): `cheap` runs the cheap stages fused in one hop; `io` what waits on the network (downstream
# calls, callbacks); `claude` the network-bound variants; `maintenance` the sweeper, retraining, archive.
IO, MAINTENANCE = "io", "maintenance"  # CHEAP and CLAUDE: the stages' variants (agents/stages/types.py)

# What the runner may lend a stage in its context (agents/pipeline/context.py).
TIERS, TOOLS, HISTORY, HANDOFF = "tiers", "tools", "history", "handoff"


def _nothing(result: StageResult) -> dict[str, Any]:
    return {}


def _always(context: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class StageSpec:
    """One stage: what it runs, in which status, where it goes next, and what it may touch."""

    name: str
    fn: StageFn
    status: str  # the ticket's status while the stage is due or running
    next_status: str  # where a successful run moves the ticket
    lends: frozenset[str] = frozenset()  # what the context carries: TIERS, TOOLS, HISTORY, HANDOFF
    writes: Callable[[StageResult], dict[str, Any]] = _nothing  # ticket columns set from its output
    # Whether it may run in the same hop as the stage before it (cheap, no network wait), given the
    # ticket's context; a stage that returns False here goes to its own queue.
    fusable: Callable[[Mapping[str, Any]], bool] = _always
    claims_from: frozenset[str] = frozenset()  # earlier statuses it may claim from in memory
    serial_per_customer: bool = False  # waits until the customer's older requests have settled
    opens_review: bool = False  # the stage escalations go to: it opens the review for a person
    resumes_review: bool = False  # where a person's approval or correction resumes the ticket
    queue: str = ""  # defaults to the stage's name
    role: str = CHEAP  # the worker role that consumes its queue: CHEAP, or IO for one that waits on the network

    @property
    def task(self) -> str:
        """The Celery task that runs this stage on its queue (agents/tasks.py)."""
        return f"agents.{self.name}"

    @property
    def queue_name(self) -> str:
        return self.queue or self.name


def _classify_writes(result: StageResult) -> dict[str, Any]:
    return {"intent": result.output.get("intent", ""), "confidence": result.output.get("confidence")}


def _execute_writes(result: StageResult) -> dict[str, Any]:
    out = result.output
    return {"intent": out["intent"], "action": out["action"], "reply": out["reply"], "resolved_at": timezone.now()}


def _escalate_writes(result: StageResult) -> dict[str, Any]:
    return {"reply": result.output["holding_reply"], "action": "escalated"}


def _execute_is_offline(context: Mapping[str, Any]) -> bool:
    """An execute whose plan calls a downstream API waits on the network: the io queue's threads."""
    plan = (context.get("decide") or {}).get("plan") or []
    return HUMAN not in context and all(action.get("tool") in OFFLINE_TOOLS for action in plan)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("parse", parse, "parsing", "classifying", claims_from=frozenset({Status.RECEIVED})),
    StageSpec("classify", classify, "classifying", "deciding", frozenset({TIERS, HANDOFF}), _classify_writes),
    StageSpec("decide", decide, "deciding", "executing", frozenset({HISTORY, HANDOFF}), serial_per_customer=True),
    StageSpec("execute", execute, "executing", Status.RESOLVED, frozenset({TOOLS}), _execute_writes, _execute_is_offline, resumes_review=True, role=IO),
    StageSpec("escalate", escalate, "escalating", Status.AWAITING_REVIEW, frozenset({TOOLS}), _escalate_writes, opens_review=True),
)  # fmt: skip


class Pipeline:
    """Every table derived from a tuple of stages: lookups by name and by status, their order, the
    queues, and the state machine (each stage's move, escalation and dead-lettering from anything in
    flight, and what people may do). `load()` rebuilds them in place (a test swaps in a toy stage)."""

    def __init__(self, stages: tuple[StageSpec, ...]):
        self.load(stages)

    def load(self, stages: tuple[StageSpec, ...]) -> None:
        self.stages = stages
        self.by_name = {s.name: s for s in stages}
        self.order = {s.name: i for i, s in enumerate(stages)}
        self.names = tuple(self.by_name)
        self.first = stages[0]
        self.escalation = next(s for s in stages if s.opens_review)
        self.resume = next(s for s in stages if s.resumes_review)
        # Every status a ticket may have, in the order of its life: received, the stages', settled.
        self.statuses = (Status.RECEIVED.value, *dict.fromkeys(s.status for s in stages), *SETTLED_STATUSES)
        # The stage due in each in-flight status (a received ticket waits for the first stage).
        self.by_status = {str(s.status): s for s in stages} | {str(c): s for s in stages for c in s.claims_from}
        self.queues = tuple(dict.fromkeys(s.queue_name for s in stages))
        self.transitions = self._transitions()

    def _transitions(self) -> dict[str, frozenset[str]]:
        moves: dict[str, set[str]] = {status: set() for status in [*self.by_status, *TERMINAL]}
        for s in self.stages:
            for before in s.claims_from:
                moves[str(before)].add(s.status)
            moves[s.status].add(s.next_status)
        for status in self.by_status:  # anything in flight may go to a person, or fail for good
            moves[status] |= {self.escalation.status, Status.DEAD_LETTERED}
        moves[self.escalation.status].discard(self.escalation.status)
        # A person resumes a waiting ticket (at the spec's resume stage) or dismisses it; replay restarts a dead letter
        # at the stage that failed; nothing leaves `resolved`.
        moves[Status.AWAITING_REVIEW] |= {self.resume.status, Status.RESOLVED}
        moves[Status.DEAD_LETTERED] |= {*(s.status for s in self.stages), Status.RESOLVED}
        return {status: frozenset(to) for status, to in moves.items()}

    def check(self, current: str, new: str) -> None:
        """Raise IllegalTransition unless `current -> new` is a legal move."""
        if new not in self.transitions.get(current, frozenset()):
            raise IllegalTransition(f"illegal ticket transition {current} -> {new}")


SPEC = Pipeline(STAGES)
# Fixed for the process's life, read at import by celeryconfig.
QUEUES: tuple[str, ...] = SPEC.queues
NAMES: tuple[str, ...] = SPEC.names
# The network-bound variants (Claude) run on LLM_QUEUE's thread pool (agents.tasks.llm_stage): agents/llm/handoff.py.
# Not stages' queues: the callbacks' (tickets' webhooks) and the periodic upkeep's (celeryconfig routes).
WEBHOOKS_QUEUE, MAINTENANCE_QUEUE = "webhooks", "maintenance"


def worker_roles(spec: Pipeline = SPEC) -> dict[str, tuple[str, ...]]:
    """Each worker role and the queues it consumes: every queue of the app, each by one role."""
    first = spec.first.queue_name
    stage_queues = {role: [s.queue_name for s in spec.stages if s.role == role] for role in (CHEAP, IO)}
    return {
        CHEAP: tuple(dict.fromkeys((*lane_queues(first), *stage_queues[CHEAP]))),
        IO: tuple(dict.fromkeys((*stage_queues[IO], WEBHOOKS_QUEUE))),
        CLAUDE: (LLM_QUEUE,),
        MAINTENANCE: (MAINTENANCE_QUEUE,),
    }


def handed_over(context: Mapping[str, Any], stage: str) -> bool:
    """Whether the stage's cheap variant already ran and handed the ticket to the llm queue."""
    return cheap_output(stage) in context


def lane_queues(queue: str) -> list[str]:
    """The queue and its lanes: `parse`, `parse.1`, ... `parse.<LANES-1>` (celeryconfig, the Procfile)."""
    return [queue, *(f"{queue}.{lane}" for lane in range(1, settings.PIPELINE["LANES"]))]


def lane_name(queue: str, lane: int) -> str:
    """Lane `lane` of `queue`: the queue itself for lane 0. Which tenant holds which lane is kept in
    Redis (agents/pipeline/tenants.py): one lane per active tenant, not `client % LANES`."""
    return f"{queue}.{lane}" if lane else queue
