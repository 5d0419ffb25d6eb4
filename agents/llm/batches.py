"""Non-urgent classifications through the Message Batches API, at the batch price.

1. The tier `batch_park`s a low-priority ticket: its request joins a pending list in Redis and the
   stage is put off (`BatchPending`, retried no later than `max_wait_seconds`).
2. `batch_submit` (beat, or at once when `size` are waiting) sends the pending requests as one
   batch once there are `size` of them or the oldest is `max_age_seconds` old.
3. `batch_poll` (beat) reads ended batches, stores each result under its `custom_id`, records
   its cost at the batch price, and re-enqueues the ticket's llm stage, which finds the result.
A ticket whose result has not come by its deadline is asked live instead, so nothing waits for a
batch longer than `max_wait_seconds`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import current_app

from agents.llm.base import BatchItem, ModelClient, ModelError, ModelReply, ModelRequest, Usage
from agents.llm.config import llm_settings
from agents.llm.handoff import LLM_TASK
from agents.llm.pricing import cost_usd
from agents.llm.scope import TicketScope
from agents.llm.spend import spend_record
from agents.llm.store import key, redis_client

log = logging.getLogger(__name__)

SUBMIT_TASK = "agents.llm_batch_submit"
RESULT_TTL = 86_400


class BatchPending(ModelError):
    """The ticket waits for its batch: nothing failed; the stage runs again when the result is in."""

    deferred = True

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message, permanent=False, retry_after=retry_after)


def batching_applies(scope: TicketScope) -> bool:
    """Whether this ticket's classification goes through a batch."""
    cfg = llm_settings()["BATCH"]
    return bool(cfg["enabled"]) and bool(scope.ticket_id) and scope.priority <= cfg["max_priority"]


def custom_id(ticket_id: str) -> str:
    """The batch request's id: `^[a-zA-Z0-9_-]{1,64}$`, one per ticket."""
    return "t-" + ticket_id.replace("-", "")


def batch_park(scope: TicketScope, request: ModelRequest) -> float:
    """Queue the ticket's request for the next batch (once); return its deadline (epoch seconds)."""
    cfg, r = llm_settings()["BATCH"], redis_client()
    parked_key = key("batch", "parked", scope.ticket_id)
    deadline = time.time() + float(cfg["max_wait_seconds"])
    entry = {"cid": custom_id(scope.ticket_id), "deadline": deadline}
    if not r.set(parked_key, json.dumps(entry), nx=True, ex=int(cfg["max_wait_seconds"]) + RESULT_TTL):
        return float(json.loads(r.get(parked_key) or json.dumps(entry))["deadline"])
    item = {
        "cid": entry["cid"],
        "ticket_id": scope.ticket_id,
        "client_id": scope.client_id,
        "stage": "classify",
        "at": time.time(),
        "request": dataclasses.asdict(request),
    }
    waiting = r.rpush(key("batch", "pending"), json.dumps(item))
    if waiting >= int(cfg["size"]):
        current_app.send_task(SUBMIT_TASK)
    return deadline


def batch_result(ticket_id: str) -> BatchItem | None:
    """The ticket's batch result, once its batch has ended."""
    r = redis_client()
    parked = r.get(key("batch", "parked", ticket_id))
    if parked is None:
        return None
    raw = r.get(key("batch", "result", json.loads(parked)["cid"]))
    if raw is None:
        return None
    data = json.loads(raw)
    reply = data.get("reply")
    if reply is not None:
        reply = ModelReply(**{**reply, "usage": Usage(**reply["usage"])})
    return BatchItem(custom_id=data["cid"], reply=reply, error=data.get("error", ""))


def batch_submit(client: ModelClient, *, force: bool = False, now: Callable[[], float] = time.time) -> str | None:
    """Send the pending requests as one batch when there are enough or the oldest is old enough
    (by `now`, the clock parked requests were stamped with)."""
    cfg, r = llm_settings()["BATCH"], redis_client()
    pending_key = key("batch", "pending")
    first = r.lindex(pending_key, 0)
    if first is None:
        return None
    old_enough = now() - json.loads(first)["at"] >= float(cfg["max_age_seconds"])
    if not (force or old_enough or r.llen(pending_key) >= int(cfg["size"])):
        return None
    raw_items = r.lpop(pending_key, int(cfg["size"])) or []
    items = [json.loads(raw) for raw in raw_items]
    if not items:
        return None
    try:
        batch_id = client.batch_submit((it["cid"], ModelRequest(**it["request"])) for it in items)
    except ModelError:
        r.lpush(pending_key, *reversed(raw_items))  # back at the front, in their order, for the next try
        raise
    meta = {
        it["cid"]: json.dumps(
            {k: it[k] for k in ("ticket_id", "client_id", "stage")} | {"model_class": it["request"]["model_class"]}
        )
        for it in items
    }
    r.hset(key("batch", "items", batch_id), mapping=meta)
    r.expire(key("batch", "items", batch_id), 30 * 86_400)
    r.sadd(key("batch", "open"), batch_id)
    log.info("submitted batch %s with %d requests", batch_id, len(items))
    return batch_id


def batch_poll(client: ModelClient) -> int:
    """Collect every ended batch; return how many results were stored."""
    r, stored = redis_client(), 0
    for raw_id in r.smembers(key("batch", "open")):
        batch_id = raw_id.decode()
        if not client.batch_ended(batch_id):
            continue
        if not r.set(key("batch", "collecting", batch_id), "1", nx=True, ex=300):
            continue  # another poller has it
        stored += _collect(client, batch_id)
        r.srem(key("batch", "open"), batch_id)
        r.delete(key("batch", "items", batch_id))
    return stored


def _collect(client: ModelClient, batch_id: str) -> int:
    r, stored = redis_client(), 0
    metas = {k.decode(): json.loads(v) for k, v in r.hgetall(key("batch", "items", batch_id)).items()}
    for item in client.batch_results(batch_id):
        meta = metas.get(item.custom_id)
        if meta is None:
            continue
        record: dict[str, Any] = {"cid": item.custom_id, "error": item.error, "reply": None}
        if item.reply is not None:
            record["reply"] = dataclasses.asdict(item.reply)
            cost = cost_usd(meta["model_class"], item.reply.usage, batch=True)
            spend_record(
                client_id=meta["client_id"],
                model_class=meta["model_class"],
                usage=item.reply.usage,
                cost=cost,
                batch=True,
            )
        r.set(key("batch", "result", item.custom_id), json.dumps(record), ex=RESULT_TTL)
        current_app.send_task(LLM_TASK, args=[meta["ticket_id"], meta["stage"]])
        stored += 1
    return stored
