"""The five agent stages, each a pure function `(TicketInput, StageContext) -> StageResult`."""

from __future__ import annotations

from collections.abc import Callable

from agents.stages.classify import classify
from agents.stages.decide import decide
from agents.stages.escalate import escalate
from agents.stages.execute import execute
from agents.stages.parse import parse
from agents.stages.types import StageContext, StageResult, TicketInput

StageFn = Callable[[TicketInput, StageContext], StageResult]

STAGES: dict[str, StageFn] = {
    "parse": parse,
    "classify": classify,
    "decide": decide,
    "execute": execute,
    "escalate": escalate,
}
