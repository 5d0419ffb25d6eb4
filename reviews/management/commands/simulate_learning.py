"""`manage.py simulate_learning --data FILE.csv --seed-per-intent K`: the learning loop, end to end.

Starts from a model trained on K examples per intent, streams the rest of the file through the real
system (the REST API, the queues, Celery workers), answers every escalation as a reviewer would —
with the file's label, through the review services — retrains on schedule from those decisions, and
prints the automated share and its precision as the stream goes. The curve is saved as a PNG.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.test import Client as HttpClient

from agents.intents import learning
from agents.intents.localmodel.data import load_csv
from agents.models import Intent
from agents.pipeline.context import ticket_input
from agents.stages.decide import render_reply
from reviews.models import Review, ReviewStatus
from reviews.services import review_claim, review_resolve
from tickets.models import TERMINAL, Status, Ticket
from tickets.services import client_create


class Command(BaseCommand):
    help = "Stream labelled requests through the system, answer escalations, retrain, and plot the curve."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data", required=True, help="A CSV with columns text,category.")
        parser.add_argument("--seed-per-intent", type=int, default=10)
        parser.add_argument("--batch", type=int, default=500, help="Requests between retrains.")
        parser.add_argument("--limit", type=int, default=0, help="Stream at most this many (0: all).")
        parser.add_argument("--folds", type=int, default=3, help="CV folds when retraining.")
        parser.add_argument("--out", default=str(Path(settings.BASE_DIR) / "var" / "learning_curve.png"))
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-worker", action="store_true", help="Use workers already running.")
        parser.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait for one batch.")
        parser.add_argument("--reload-wait", type=float, default=6.0, help="Seconds for workers to load a new model.")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            texts, labels = load_csv(opts["data"])
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        unknown = set(labels) - set(Intent.objects.values_list("name", flat=True))
        if unknown:
            raise CommandError(f"intents not in the pack: {sorted(unknown)[:5]}… load the pack first")
        seed, stream = _split(texts, labels, opts["seed_per_intent"], opts["seed"])
        if opts["limit"]:
            stream = stream[: opts["limit"]]
        if not stream:
            raise CommandError(f"nothing left to stream after {opts['seed_per_intent']} seed examples per intent")
        settings.LEARNING = {**getattr(settings, "LEARNING", {}), "FOLDS": opts["folds"]}
        base = ([t for t, _ in seed], [y for _, y in seed])
        self.stdout.write(
            f"Seed: {len(seed)} examples; streaming {len(stream)} requests in batches of {opts['batch']}."
        )
        started = time.monotonic()
        version = learning.model_train(base=base, feedback=[])
        learning.model_activate(version=version, reason="simulate_learning: seed model")
        with contextlib.ExitStack() as stack:
            if not opts["no_worker"]:
                stack.enter_context(_worker())
            curve = self._stream(stream, base, opts)
        out = Path(opts["out"])
        _plot(curve, out)
        summary = _summary(curve, time.monotonic() - started)
        out.with_suffix(".json").write_text(json.dumps({"summary": summary, "curve": curve}, indent=1))
        self.stdout.write(
            f"SUMMARY streamed={summary['streamed']} seconds={summary['seconds']:.0f} retrains={summary['retrains']} "
            f"activated={summary['activated']} first_batch automated {summary['first']['automated']:.1%} at "
            f"{summary['first']['precision']:.2%} | last_batch automated {summary['last']['automated']:.1%} at "
            f"{summary['last']['precision']:.2%} | overall automated {summary['overall']['automated']:.1%} at "
            f"{summary['overall']['precision']:.2%}"
        )
        self.stdout.write(f"Learning curve saved to {out} (points in {out.with_suffix('.json')})")

    def _stream(
        self, stream: list[tuple[str, str]], base: tuple[list[str], list[str]], opts: dict[str, Any]
    ) -> list[dict[str, float]]:
        client, token = client_create(name=f"simulation-{int(time.time())}")
        http = HttpClient(HTTP_AUTHORIZATION=f"Bearer {token}")
        reviewer, _ = get_user_model().objects.get_or_create(username="simulated-reviewer")
        answers: list[tuple[str, str]] = []
        curve: list[dict[str, float]] = []
        done = 0
        for start in range(0, len(stream), opts["batch"]):
            chunk = stream[start : start + opts["batch"]]
            ids = {_submit(http, text): label for text, label in chunk}
            _settle(ids, reviewer, answers, opts["timeout"])
            point = _measure(ids, len(answers))
            done += len(chunk)
            point.update(streamed=done, batch=len(chunk), retrained=0.0, activated=0.0)
            curve.append(point)
            self.stdout.write(
                f"{done:>6} streamed | batch automated {point['automated']:.1%} at precision "
                f"{point['precision']:.2%} | reviewer answers so far {len(answers)}"
            )
            if start + opts["batch"] < len(stream):
                version = learning.model_train(base=base, feedback=answers)
                wins, why = learning.candidate_wins(version)
                if wins:
                    learning.model_activate(version=version, reason=f"simulate_learning: {why}")
                point.update(retrained=1.0, activated=float(wins))
                learning.thresholds_follow_reviewers()
                self.stdout.write(
                    f"         retrained on {len(answers)} answers: {'activated' if wins else 'kept'} ({why})"
                )
                time.sleep(opts["reload_wait"])  # workers check for a newly active model every few seconds
        return curve


def _summary(curve: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """First and last batch, the whole stream (weighted by batch size), retrains and wall time."""
    total = sum(p["batch"] for p in curve)
    automated = sum(p["automated"] * p["batch"] for p in curve)
    correct = sum(p["precision"] * p["automated"] * p["batch"] for p in curve)
    pick = ("automated", "precision")
    return {
        "streamed": int(total),
        "seconds": seconds,
        "retrains": int(sum(p["retrained"] for p in curve)),
        "activated": int(sum(p["activated"] for p in curve)),
        "first": {k: curve[0][k] for k in pick} if curve else {},
        "last": {k: curve[-1][k] for k in pick} if curve else {},
        "overall": {"automated": automated / max(total, 1), "precision": correct / max(automated, 1e-9)},
    }


def _split(
    texts: list[str], labels: list[str], k: int, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    rows = list(zip(texts, labels, strict=True))
    random.Random(seed).shuffle(rows)
    taken: dict[str, int] = defaultdict(int)
    seeded, rest = [], []
    for text, label in rows:
        if taken[label] < k:
            taken[label] += 1
            seeded.append((text, label))
        else:
            rest.append((text, label))
    return seeded, rest


def _submit(http: HttpClient, text: str) -> str:
    while True:
        response = http.post("/api/v1/tickets/", {"body": text}, content_type="application/json")
        if response.status_code in (429, 503):  # throttled or backpressure: wait as told
            time.sleep(float(response.get("Retry-After", 1)))
            continue
        if response.status_code != 202:
            raise CommandError(f"POST failed: {response.status_code} {response.content[:200]!r}")
        return response.json()["id"]


def _settle(ids: dict[str, str], reviewer: Any, answers: list[tuple[str, str]], timeout: float) -> None:
    """Wait for every ticket; answer each escalation with the file's label, as a reviewer would."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for review in Review.objects.filter(ticket_id__in=pending, status=ReviewStatus.OPEN).select_related("ticket"):
            label = ids[str(review.ticket_id)]
            policy = Intent.objects.get(name=label)
            reply = ""
            if "reply" in policy.allowed_actions:
                reply = render_reply(policy.reply_template, ticket_input(review.ticket)) or "Resolved by a reviewer."
            review_claim(review=review, reviewer=reviewer)
            review_resolve(review=review, reviewer=reviewer, intent=label, reply=reply)
            answers.append((review.ticket.context.get("parse", {}).get("text") or review.ticket.body, label))
        settled = set(Ticket.objects.filter(pk__in=pending, status=Status.RESOLVED).values_list("pk", flat=True))
        dead = set(Ticket.objects.filter(pk__in=pending, status=Status.DEAD_LETTERED).values_list("pk", flat=True))
        pending -= {str(pk) for pk in settled | dead}
        time.sleep(0.2)
    if pending:
        raise CommandError(f"{len(pending)} tickets did not settle in {timeout}s")


def _measure(ids: dict[str, str], answers: int) -> dict[str, float]:
    tickets = Ticket.objects.filter(pk__in=list(ids)).values_list("pk", "intent", "status")
    reviewed = set(Review.objects.filter(ticket_id__in=list(ids)).values_list("ticket_id", flat=True))
    automated = [(str(pk), intent) for pk, intent, status in tickets if status in TERMINAL and pk not in reviewed]
    correct = sum(1 for pk, intent in automated if intent == ids[pk])
    return {
        "automated": len(automated) / max(len(ids), 1),
        "precision": correct / max(len(automated), 1),
        "answers": float(answers),
    }


@contextlib.contextmanager
def _worker() -> Any:
    from celery.contrib.testing.worker import start_worker

    from agents.pipeline.spec import CHEAP, CLAUDE, IO, worker_roles
    from project.celery import app

    roles = worker_roles()  # every lane and stage queue, the callbacks' and Claude's, as the spec has them
    queues = [*roles[CHEAP], *roles[IO], *roles[CLAUDE]]
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, queues=queues, shutdown_timeout=60):
        yield


def _plot(curve: list[dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    xs = [p["streamed"] for p in curve]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(xs, [p["automated"] * 100 for p in curve], marker="o", label="handled without a person (%)")
    ax.plot(xs, [p["precision"] * 100 for p in curve], marker="s", label="precision of what was automated (%)")
    target = 100 * learning.learning_settings()["TARGET_PRECISION"]
    ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"precision target ({target:g} %)")
    for p in curve:
        if p.get("activated"):  # a new model serves from the next batch on
            ax.axvline(p["streamed"], color="green", alpha=0.15, linewidth=3)
    ax.set_xlabel("requests streamed (green: a retrained model was activated)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Learning from reviewers: automated share and its precision per batch")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
