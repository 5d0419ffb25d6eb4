"""Where a stage's Claude variant runs: its queue, served by the claude worker's thread pool, and its
task (agents.tasks.llm_stage). The stage spec and the batches name them from here."""

from __future__ import annotations

LLM_QUEUE = "llm"
LLM_TASK = "agents.llm_stage"
