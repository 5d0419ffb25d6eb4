"""Thin Celery tasks: take an id, call the pipeline service, decide whether to retry."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_postrun, task_prerun, worker_init
from django.db import InterfaceError, OperationalError, connections
from django.utils import timezone

from agents import obs_tasks  # noqa: F401 - archive beat, exporter, log context
from agents.llm import batches
from agents.llm.base import ModelClient
from agents.pipeline import context, runner, sweeper
from agents.pipeline.backoff import backoff_seconds
from agents.pipeline.spec import LLM_TASK, QUEUES, STAGES, TIERS, StageSpec, lane_queues
from agents.stages.types import CLAUDE

log = logging.getLogger(__name__)

# Every thread's connection objects that ran a task (as many as the pool has threads), closed when
# the worker stops: a thread pool's threads outlive their last task, and an in-process worker (the
# tests') would otherwise keep its sessions open after it stopped.
_task_connections: set[Any] = set()


@task_prerun.connect(dispatch_uid="agents.tasks.db_connections_before")
@task_postrun.connect(dispatch_uid="agents.tasks.db_connections_after")
def _database_connections(**_: Any) -> None:
    """A task is a request: keep a healthy connection up to CONN_MAX_AGE, drop a broken one
    (celeryconfig's CELERY_DB_REUSE_MAX stops Celery from closing every connection every task)."""
    for connection in connections.all(initialized_only=True):
        # A task applied in the caller's thread inside its transaction (`.apply()` from a command, an
        # admin action, a test) must not close the caller's connection under it (CONN_MAX_AGE passed).
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
    _task_connections.update(connections.all())


@worker_init.connect(dispatch_uid="agents.tasks.db_connections_at_stop")
def _close_connections_when_stopped(sender: Any, **_: Any) -> None:
    """Once the worker's pool has stopped (warm or cold), close every connection its tasks kept."""
    stopped = sender.on_stopped

    def on_stopped() -> None:
        try:
            stopped()
        finally:
            for wrapper in list(_task_connections):
                if wrapper.connection is not None:
                    with contextlib.suppress(Exception):
                        wrapper.connection.close()  # psycopg's own close: safe from this thread
            _task_connections.clear()

    sender.on_stopped = on_stopped  # read by the worker's blueprint, built right after this signal


def _lends_tiers(queues: set[str]) -> bool:
    """Does a worker consuming `queues` run a stage that classifies (its cheap variant)?"""
    classifying = {lane for spec in STAGES if TIERS in spec.lends for lane in lane_queues(spec.queue_name)}
    return bool(queues & (classifying | set(lane_queues(QUEUES[0]))))  # the first queue's hop is fused


@worker_init.connect(dispatch_uid="agents.tasks.warm_before_the_pool")
def _warm_before_the_pool(sender: Any, **_: Any) -> None:
    """The cheap stages' worker loads its tiers before its pool forks (`context.warm`)."""
    if not _lends_tiers(set(sender.app.amqp.queues.consume_from or ())):
        return
    started = time.monotonic()
    try:
        context.warm()
        log.info("classifier tiers loaded in %.1f s, before the pool starts", time.monotonic() - started)
    except Exception:  # the tiers then load on first use, as in any other process
        log.warning("could not warm the classifier tiers before the pool started", exc_info=True)


@contextlib.contextmanager
def _retried_while_postgres_away(task: Task) -> Any:
    """Postgres away mid-hop (a read, the claim, the hop's one write): nothing of the hop was
    written, so the task is simply tried again after a backoff — not acked as failed and left to
    the sweeper's PIPELINE_STUCK_AFTER_SECONDS (5 minutes in production). Not an attempt."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise task.retry(countdown=backoff_seconds(min(task.request.retries + 1, 8)), max_retries=None) from exc


class StageTask(Task):
    """A stage's task: a hop stopped by the soft time limit fails its attempt (retried once, then
    dead-lettered), wherever in the hop the limit fired; a hop whose process the hard limit killed
    is dispatched again at once (an attempt counted), not left to the sweeper."""

    def log_fields(self, args: Any) -> dict[str, str]:
        """What the JSON logs bind while it runs (project/logging.py)."""
        return {"ticket_id": str(args[0]), "stage": self.name.removeprefix("agents.")}

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, SoftTimeLimitExceeded) and args:
            runner.stage_stopped(str(args[0]), self.name.removeprefix("agents."))
        elif isinstance(exc, TimeLimitExceeded) and args:
            # In the worker's main process (the child is gone): its message is acknowledged, so the
            # hop starts again now, through the conditional write, or waits for the sweeper.
            try:
                sweeper.hop_restart(str(args[0]), self.name.removeprefix("agents."))
            except Exception:
                log.warning("could not restart the hop of %s after its hard time limit", args[0], exc_info=True)


def _make_stage_task(spec: StageSpec) -> Task:
    @shared_task(name=spec.task, bind=True, base=StageTask, max_retries=None)
    def run(self: Task, ticket_id: str) -> str:
        with _retried_while_postgres_away(self):
            outcome = runner.stage_run(ticket_id=ticket_id, stage=spec.name)
        if outcome.retry_in is not None:
            # The attempt count lives in Postgres; Celery's own counter is not the budget.
            raise self.retry(countdown=outcome.retry_in, max_retries=None)
        return outcome.kind

    run.__doc__ = f"Run the {spec.name} stage for one ticket."
    return run


# One task per stage, named and routed from the spec (celeryconfig).
STAGE_TASKS: dict[str, Task] = {spec.name: _make_stage_task(spec) for spec in STAGES}


class LlmStageTask(Task):
    """The network-bound variant's task: its arguments are the ticket and the stage."""

    def log_fields(self, args: Any) -> dict[str, str]:
        """What the JSON logs bind while it runs (project/logging.py)."""
        return {"ticket_id": str(args[0]), **({"stage": str(args[1])} if len(args) > 1 else {})}


@shared_task(name=LLM_TASK, bind=True, base=LlmStageTask, max_retries=None)
def llm_stage(self: Task, ticket_id: str, stage: str) -> str:
    """Run a stage's network-bound variant (Claude) on the llm queue's thread pool."""
    with _retried_while_postgres_away(self):
        outcome = runner.stage_run(ticket_id=ticket_id, stage=stage, variant=CLAUDE)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    return outcome.kind


@shared_task(name="agents.sweep_stuck_tickets")
def sweep_stuck_tickets(**kwargs: Any) -> int:
    """Beat: re-enqueue tickets whose message the broker may have lost."""
    return sweeper.tickets_sweep_stuck(**kwargs)


@shared_task(name="agents.sweep_silent_workers", acks_late=False)
def sweep_silent_workers() -> int:
    """Beat, every few seconds: dispatch again the hops of workers whose heartbeat stopped, and start a
    drain for callbacks overdue by a few seconds (a drain killed with its rows claimed: they are due
    again when its lease ends, and no drain is coming for them)."""
    restarted = sweeper.workers_sweep_silent()
    sweeper.callbacks_sweep_lost(cutoff=timezone.now() - timedelta(seconds=sweeper.CALLBACK_LOST_AFTER_SECONDS))
    return restarted


@shared_task(name="agents.retrain_local_model", soft_time_limit=1800, time_limit=2000)
def retrain_local_model() -> str:
    """Beat: retrain from base data + reviewers' decisions; activate only if not worse."""
    from agents.intents.learning import model_retrain

    version, activated, why = model_retrain()
    return f"{version.version} {'activated' if activated else 'kept previous'}: {why}"


@shared_task(name="agents.thresholds_follow_reviewers")
def thresholds_follow_reviewers() -> int:
    """Beat: move per-intent thresholds with the reviewers' override rates."""
    from agents.intents.learning import thresholds_follow_reviewers as follow

    return len(follow())


# --- The Message Batches API: beat tasks ------------------------------------------------------
def _llm_client() -> ModelClient | None:
    """The per-process model client the Claude tier uses (None without an API key)."""
    return context.parts.llm().get("client")


@shared_task(name="agents.llm_batch_submit")
def llm_batch_submit(force: bool = False) -> str:
    """Beat (and a full pending list): send the waiting low-priority requests as one batch."""
    client = _llm_client()
    if client is None:
        return "llm disabled"
    return batches.batch_submit(client, force=force) or "nothing to submit"


@shared_task(name="agents.llm_batch_poll")
def llm_batch_poll() -> int:
    """Beat: collect ended batches and wake their tickets."""
    client = _llm_client()
    return batches.batch_poll(client) if client is not None else 0
