"""Celery configuration: queues, routes, time limits, retry defaults, the beat schedule.

State lives in Postgres, so results are ignored and every task is safe to deliver twice.
"""

from __future__ import annotations

import os
from datetime import timedelta

from django.conf import settings
from kombu import Queue

from agents.pipeline.spec import LLM_QUEUE, LLM_TASK, QUEUES, STAGES, lane_queues

broker_url = settings.CELERY_BROKER_URL
# acks_late: a task is acknowledged after it ran, so a worker that dies mid-stage hands it back.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
result_backend = None
timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False
broker_connection_retry_on_startup = True
# A publish after a commit (the API's first hop, a worker's next one) must not hold its request or
# task while the broker is away: the work is in Postgres already and the sweeper publishes it again.
# Celery's defaults (4 s to connect, 3 retries) held the API past a client's 10 s timeout.
broker_connection_timeout = 2.0
task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
# Celery's Django fixup closes every database connection before and after every task unless this
# is set, so each task paid a new Postgres connection (a backend fork, authentication, a time-zone
# round trip). Set this high, the fixup never closes them; `agents/tasks.py` instead treats a task
# as Django treats a request — `close_old_connections()` before and after — so CONN_MAX_AGE and
# CONN_HEALTH_CHECKS decide, and a broken or errored connection is still dropped (docs/performance.md).
CELERY_DB_REUSE_MAX = 1_000_000_000

# Redis: a message a worker took and did not acknowledge comes back after the visibility timeout.
# It must outlast everything a live worker holds — the longest time limit (retraining, 2000 s) and
# the longest countdown a retry waits in the worker (backoff ≤ 300 s) — or Redis hands a live
# worker's work to a second one. Recovery does not wait for it: a dead or frozen worker's hops are
# dispatched again from its heartbeat record within seconds (project/heartbeat.py; the message it
# held comes back an hour later and finds its ticket moved on). docs/reliability.md.
VISIBILITY_TIMEOUT = 3600
broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
if settings.BROKER_KEY_PREFIX:  # test sessions keep their queues apart
    broker_transport_options["global_keyprefix"] = settings.BROKER_KEY_PREFIX
task_soft_time_limit = 60
task_time_limit = 90

# A queue per stage, from the stage spec (agents/pipeline/spec.py); the cheap stages run fused in
# one hop on the first one's queue (settings.PIPELINE["FUSE"]), the others are used by the sweeper,
# replays, reviewers' decisions and executes that call downstream APIs. `llm` and `webhooks` wait on
# the network and are served by thread pools; `maintenance` (the sweeper, retraining, archiving) has
# a worker of its own. Which worker serves which queue: the Procfile and docs/architecture.md.
WEBHOOKS_QUEUE, MAINTENANCE_QUEUE = "webhooks", "maintenance"
# New tickets' first hops go to their client's lane of the first queue (agents/pipeline/dispatch.py).
LANES = lane_queues(QUEUES[0])
task_queues = [Queue(name) for name in dict.fromkeys((*LANES, *QUEUES, LLM_QUEUE, WEBHOOKS_QUEUE, MAINTENANCE_QUEUE))]
task_default_queue = MAINTENANCE_QUEUE
# The stage tasks get the pipeline's own, short limits (enforced by the prefork pool of `cpu`).
task_annotations = {
    spec.task: {
        "soft_time_limit": settings.PIPELINE["STAGE_SOFT_TIME_LIMIT_SECONDS"],
        "time_limit": settings.PIPELINE["STAGE_TIME_LIMIT_SECONDS"],
    }
    for spec in STAGES
}
task_routes = {
    **{spec.task: {"queue": spec.queue_name} for spec in STAGES},
    LLM_TASK: {"queue": LLM_QUEUE},
    "agents.llm_batch_submit": {"queue": LLM_QUEUE},
    "agents.llm_batch_poll": {"queue": LLM_QUEUE},
    "agents.deliver_callbacks": {"queue": WEBHOOKS_QUEUE},
    "agents.sweep_stuck_tickets": {"queue": MAINTENANCE_QUEUE},
    "agents.sweep_silent_workers": {"queue": MAINTENANCE_QUEUE},
    "agents.retrain_local_model": {"queue": MAINTENANCE_QUEUE},
    "agents.archive_traces": {"queue": MAINTENANCE_QUEUE},
    "agents.thresholds_follow_reviewers": {"queue": MAINTENANCE_QUEUE},
}

# A silent worker's hops are dispatched again within seconds (project/heartbeat.py: silent after
# 5 s); a sweep not run in its period (maintenance away) expires rather than piling up.
WORKERS_SWEEP_EVERY_SECONDS = float(os.environ.get("WORKERS_SWEEP_EVERY_SECONDS", 2))
beat_schedule = {
    "sweep-silent-workers": {
        "task": "agents.sweep_silent_workers",
        "schedule": timedelta(seconds=WORKERS_SWEEP_EVERY_SECONDS),
        "options": {"expires": 2 * WORKERS_SWEEP_EVERY_SECONDS},
    },
    "sweep-stuck-tickets": {
        "task": "agents.sweep_stuck_tickets",
        "schedule": timedelta(seconds=float(os.environ.get("SWEEP_EVERY_SECONDS", 30))),
    },
    "llm-batch-submit": {"task": "agents.llm_batch_submit", "schedule": timedelta(seconds=10)},
    "llm-batch-poll": {"task": "agents.llm_batch_poll", "schedule": timedelta(seconds=15)},
    "archive-old-traces": {"task": "agents.archive_traces", "schedule": timedelta(minutes=5)},
    "retrain-local-model": {"task": "agents.retrain_local_model", "schedule": timedelta(hours=6)},
    "thresholds-follow-reviewers": {"task": "agents.thresholds_follow_reviewers", "schedule": timedelta(hours=1)},
}


# --- Broker options (deploy, #14): RabbitMQ as a first-class broker --------------------------------
# On AMQP every queue is a quorum queue (replicated, durable; a message survives a broker node).
# Quorum queues have no global QoS: Celery sees the x-queue-type argument and uses per-consumer
# prefetch (worker_detect_quorum_queues). A countdown (retries, the callbacks' window) then goes
# through RabbitMQ's native delayed delivery, which needs the queues bound to topic exchanges;
# the queue's name stays its routing key, so routes by queue name are unchanged.
worker_detect_quorum_queues = True
task_create_missing_queue_type = "classic"
if broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
    from kombu import Exchange

    task_create_missing_queue_type = "quorum"
    task_default_queue_type = "quorum"
    task_default_exchange_type = "topic"
    task_queues = [
        Queue(q.name, Exchange(q.name, type="topic"), routing_key=q.name, queue_arguments={"x-queue-type": "quorum"})
        for q in task_queues
    ]
    # Publisher confirms: a publish returns once the broker has the message (a ticket's first
    # hop is published on commit; without a confirm a broker crash could drop it unseen, leaving
    # it to the sweeper).
    broker_transport_options = {"confirm_publish": True}
    # AMQP heartbeats: a frozen or cut-off worker's connection is closed by RabbitMQ about 10-20 s
    # after its last frame, which hands back the messages RabbitMQ had pushed to it (its prefetch, one
    # per consumer and queue); its hops have been dispatched again from the registry before that (5 s
    # of silence), and the returned messages find their tickets moved on. Lower costs traffic and
    # false alarms on a starved host, and did not recover a frozen worker faster in the fault suite
    # (docs/reliability.md). RabbitMQ's `consumer_timeout` (rabbitmq.conf, 30 min by default) must
    # outlast the longest task — retraining has 2000 s — or the channel is closed under it.
    broker_heartbeat = 10
# --- end of the broker options ---
