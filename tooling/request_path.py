"""The request path (POST → stages → callback) file by file, with each file's length in lines, as
docs/architecture.md lists it between its `request-path` markers.

    python -m tooling.request_path            # print the tables
    python -m tooling.request_path --write    # rewrite them in docs/architecture.md

tests/project/test_request_path.py checks that the doc's tables are these, with today's line counts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- request-path:begin (python -m tooling.request_path --write) -->", "<!-- request-path:end -->"


class Hop(NamedTuple):
    layer: str
    path: str  # a file, or a folder (its .py files summed); "" for a placeholder
    what: str


PATH = (
    Hop("API", "tickets/urls.py", "`/api/v1/tickets/` → `TicketListCreateApi`"),
    Hop("API", "tickets/api/base.py", "`ClientApi`: the JSON parser, authentication and throttle every view shares"),
    Hop("tickets", "tickets/auth.py", "the bearer key: one indexed read of its SHA-256, its client"),
    Hop("API", "tickets/api/views.py", "`POST`: validate, backpressure, then `ticket_submit`; 202 with the ticket"),
    Hop(
        "API",
        "tickets/api/serializers.py",
        "`TicketInputSerializer` (limits after NFKC, the callback URL through the network guard), the output",
    ),
    Hop(
        "API",
        "tickets/api/backpressure.py",
        "refuse a client's new work past its share of the work in flight (429), or everyone's while the shared queues hold too much (503)",
    ),
    Hop(
        "agents",
        "agents/pipeline/intake.py",
        "`ticket_submit`: store, count it in its client's work in flight, and on commit publish the first stage",
    ),
    Hop("tickets", "tickets/services.py", "`ticket_create`: one INSERT, the idempotency key honoured"),
    Hop("agents", "agents/pipeline/tenants.py", "each tenant's work in flight and its lane, counted in Redis"),
    Hop(
        "agents",
        "agents/pipeline/dispatch.py",
        "publish a stage's task to its queue (a cheap stage of a known client: the client's lane)",
    ),
    Hop(
        "agents",
        "agents/tasks.py",
        "one thin Celery task per stage, made from the spec: call the runner, retry when told",
    ),
    Hop(
        "agents",
        "agents/pipeline/spec.py",
        "the stages declared once: function, status, next status, what it is lent and writes, fusable, role, resume",
    ),
    Hop(
        "agents",
        "agents/pipeline/runner.py",
        "load, claim, run the pure stage, commit the move and its trace rows in one statement, choose the next hop",
    ),
    Hop(
        "agents",
        "agents/pipeline/store.py",
        "the runner's reads and writes: the claim, the hop's one UPDATE with its trace rows, dead-lettering",
    ),
    Hop(
        "agents",
        "agents/pipeline/context.py",
        "what a stage is lent: the catalogue, the tiers, the tools, the hand-over",
    ),
    Hop("agents", "agents/stages/parse.py", "clean, normalise, detect the language, mark what is sensitive"),
    Hop("agents", "agents/stages/classify.py", "rules → local model → (unsure) hand over to Claude (the tiers below)"),
    Hop("agents", "agents/stages/decide.py", "the intent's policy and the context → a plan, or a person"),
    Hop("agents", "agents/stages/execute.py", "run the plan's tools through the side-effect ledger"),
    Hop(
        "agents",
        "agents/tools.py",
        "the tools, typed, run through the side-effect ledger: at most once per key, no transaction across a call",
    ),
    Hop("agents", "agents/stages/escalate.py", "a holding reply; the runner opens the review through the port below"),
    Hop("agents", "agents/people.py", "`ReviewQueue`: the port the reviews app fills (open a review, feedback)"),
    Hop(
        "tickets",
        "tickets/webhooks/schedule.py",
        "`callback_due` on the terminal commit (dispatch calls it): one drain task a batching window; the retry schedule",
    ),
    Hop(
        "tickets",
        "tickets/webhooks/tasks.py",
        "the drain task on the `webhooks` queue (its name, `agents.deliver_callbacks`, kept for queued messages)",
    ),
    Hop(
        "tickets",
        "tickets/webhooks/delivery.py",
        "the drain: claim a batch, each client within its share of the thread pool, POST, settle what came back",
    ),
    Hop(
        "tickets",
        "tickets/webhooks/outbox.py",
        "the outbox's statements: claim under a lease, the ledger (`CallbackDelivery`), settle on the delivery key",
    ),
    Hop(
        "tickets",
        "tickets/webhooks/breaker.py",
        "a circuit breaker per client in Redis: an endpoint that keeps failing is left alone, then probed",
    ),
    Hop("tickets", "tickets/webhooks/payload.py", "what the callback says, and its delivery key"),
    Hop("tickets", "tickets/webhooks/signing.py", "its Standard Webhooks signature under the client's secret(s)"),
    Hop(
        "tickets",
        "tickets/webhooks/client.py",
        "the guarded HTTP clients: tenants' callbacks (`CALLBACK_ALLOWED_HOSTS`), downstream webhooks (`DOWNSTREAM_ALLOWED_HOSTS`)",
    ),
    Hop(
        "project",
        "project/netguard/",
        "the guard: no private address unless its allow-list opens it; name lookups by a deadline, capped per tenant",
    ),
)

# The classifier tiers a classify stage is lent (agents/intents/), and what they stand on.
TIERS = (
    Hop(
        "agents",
        "agents/intents/catalog.py",
        "the intents as stages see them: loaded from Postgres, cached per process",
    ),
    Hop("agents", "agents/intents/rules.py", "the pack's rules: trusted only when exactly one intent matches"),
    Hop(
        "agents",
        "agents/intents/safe_regex.py",
        "the rules' regexes on RE2: time linear in the text, whatever the rule says",
    ),
    Hop(
        "agents", "agents/intents/local.py", "the local model tier: the active version, signature checked, swapped live"
    ),
    Hop(
        "agents", "agents/intents/blobs.py", "model blobs signed (HMAC under SECRET_KEY) and verified before unpickling"
    ),
    Hop(
        "agents",
        "agents/intents/localmodel/",
        "the local model as served: tf-idf + linear, the encoder head, calibration",
    ),
    Hop("agents", "agents/intents/claude.py", "the Claude tier, on the claude worker: cache, budget, routing, batches"),
    Hop("agents", "agents/llm/", "Claude's provider plumbing: the client, the shared limiter, prompts, cost, batches"),
)

# Around the path, each in a module of its own.
AROUND = (
    Hop("agents", "agents/pipeline/human.py", "what people do: replay, resume, dismiss"),
    Hop("agents", "agents/pipeline/sweeper.py", "the sweeper: in-flight tickets untouched too long published again"),
    Hop("agents", "agents/pipeline/worker.py", "the worker roles' entry point (queues from the spec)"),
    Hop("agents", "agents/pipeline/events.py", "the signal observers may subscribe to: metrics and logs only"),
    Hop(
        "agents", "agents/intents/learning.py", "the learning loop: train, gate, activate; thresholds follow reviewers"
    ),
    Hop("agents", "agents/intents/training/", "training and evaluation, never imported by the request path"),
)


def lines(path: str) -> int:
    """`wc -l` of a file, or of a folder's .py files summed."""
    target = ROOT / path
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    return sum(len(f.read_bytes().splitlines()) for f in files)


def table(hops: tuple[Hop, ...], *, numbered: bool) -> list[str]:
    head = ("| # " if numbered else "") + "| layer | file | lines | what happens there |"
    rule = ("|---" if numbered else "") + "|---|---|---|---|"
    rows = [head, rule]
    for n, hop in enumerate(hops, 1):
        file, count = (f"`{hop.path}`", str(lines(hop.path))) if hop.path else ("(placeholder)", "—")
        rows.append((f"| {n} " if numbered else "") + f"| {hop.layer} | {file} | {count} | {hop.what} |")
    return rows


def render() -> str:
    """The block docs/architecture.md holds between its markers."""
    return "\n".join(
        [
            BEGIN,
            *table(PATH, numbered=True),
            "",
            "The classifier tiers the classify stage is lent, cheapest first, and what they stand on:",
            "",
            *table(TIERS, numbered=False),
            "",
            "Around the path, each in a module of its own:",
            "",
            *table(AROUND, numbered=False),
            END,
        ]
    )


def documented(text: str) -> str:
    """The block between the markers of docs/architecture.md's text."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def main(argv: list[str]) -> int:
    block = render()
    if argv[:1] == ["--write"]:
        text = DOC.read_text()
        DOC.write_text(text.replace(documented(text), block))
        print(f"{DOC.relative_to(ROOT)}: the request path rewritten")
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
