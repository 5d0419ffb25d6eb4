"""The agent stages, each a pure function `(TicketInput, StageContext) -> StageResult`; which runs
when, and what it may touch, is declared once in `agents/pipeline/spec.py`."""

from __future__ import annotations

from agents.stages.classify import classify
from agents.stages.decide import decide
from agents.stages.escalate import escalate
from agents.stages.execute import execute
from agents.stages.parse import parse

__all__ = ["classify", "decide", "escalate", "execute", "parse"]
