"""Steady load on the API, as a well-behaved client sends it: an Idempotency-Key per request,
retried on errors and on 503/429 (after Retry-After) until accepted or out of patience."""

from __future__ import annotations

import itertools
import queue
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tooling.system import ApiClient

# kind → (texts, the terminal states the ticket may reach). The rules route every kind but "llm",
# which only the Claude tier (the simulator) can classify, so its outcome is not fixed.
KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "reply": (("My card still hasn't arrived, where is it?",), ("resolved",)),
    "webhook": (("I lost my card yesterday, please block it",), ("resolved",)),
    "refused": (("Please cancel the transfer I made this morning",), ("dead_lettered",)),  # downstream: 422
    "policy": (("Where is my refund?",), ("awaiting_review",)),
    "unknown": (("Why is the sky blue on Tuesdays?",), ("awaiting_review",)),
    "no_action": (("Please close my account today",), ("awaiting_review",)),
    "llm": (
        (
            "The plastic thing you posted me never showed up",
            "Someone has been spending from my balance without asking",
            "How do I stop being your customer for good?",
            "Money I was promised back is nowhere to be seen",
        ),
        ("resolved", "awaiting_review", "dead_lettered"),
    ),
}
WEIGHTS = {"reply": 3, "webhook": 3, "refused": 1, "policy": 1, "unknown": 1, "no_action": 1}


@dataclass
class Submission:
    kind: str
    key: str
    payload: dict[str, object]
    first_try: float = 0.0
    accepted_at: float = 0.0
    ticket_id: str = ""
    tries: int = 0


@dataclass
class Load:
    """`rate` requests a second from `senders` threads until `stop()`; a few customers share tickets."""

    api_url: str
    client: ApiClient
    rate: float
    patience: float = 60.0  # how long one request is retried before the client gives up on it
    senders: int = 4
    shared_customers: int = 3  # a few customers send a share of the requests, so the same
    shared_fraction: float = 0.25  # customer sometimes has two in flight (ordered at decide)
    seed: int = 1
    weights: dict[str, float] = field(default_factory=lambda: dict(WEIGHTS))
    accepted: dict[str, Submission] = field(default_factory=dict)
    given_up: list[Submission] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # a valid request answered 4xx: a bug
    answers: Counter[str] = field(default_factory=Counter)
    # Requests the API did not answer as it promises (a dropped connection, a timeout, a 5xx or 429
    # without Retry-After): (when, what).
    unanswered: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._jobs: queue.Queue[Submission | None] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._seq = itertools.count(1)
        self._threads: list[threading.Thread] = []

    def _next(self) -> Submission:
        n = next(self._seq)
        kind = self._rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
        # A refusal is retried before it is dead-lettered (see test_reliability_regressions.py); from a
        # shared customer it would hold that customer's later requests at decide all that time.
        shared = kind != "refused" and self._rng.random() < self.shared_fraction
        customer = f"shared-{self._rng.randrange(self.shared_customers)}" if shared else f"solo-{n}"
        text = self._rng.choice(KINDS[kind][0])
        payload = {"body": f"{text} (message {n})", "customer_ref": customer, "channel": "load"}
        return Submission(kind=kind, key=str(uuid.uuid4()), payload=payload)

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._tick, daemon=True)]
        self._threads += [threading.Thread(target=self._send_loop, daemon=True) for _ in range(self.senders)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop making new requests; wait for those still being retried (or given up on)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _tick(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._jobs.put(self._next())
            next_at += 1 / self.rate
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        for _ in range(self.senders):
            self._jobs.put(None)

    def _send_loop(self) -> None:
        # X-Forwarded-Proto: as the TLS proxy in front of the API says (production redirects plain HTTP).
        headers = {"Authorization": f"Bearer {self.client.token}", "X-Forwarded-Proto": "https"}
        with httpx.Client(base_url=self.api_url, headers=headers, timeout=5.0) as http:
            while (job := self._jobs.get()) is not None:
                self._submit(http, job)

    def _submit(self, http: httpx.Client, job: Submission) -> None:
        job.first_try = time.time()
        while time.time() - job.first_try < self.patience:
            job.tries += 1
            try:
                response = http.post("/api/v1/tickets/", json=job.payload, headers={"Idempotency-Key": job.key})
            except httpx.HTTPError as exc:
                self._count(type(exc).__name__, answered=False)
                time.sleep(0.3)
                continue
            code = response.status_code
            told_when = "Retry-After" in response.headers or (code < 500 and code != 429)  # when to come back
            self._count(str(code) + ("" if told_when else " without Retry-After"), answered=told_when)
            if response.status_code in (200, 202):
                job.ticket_id, job.accepted_at = response.json()["id"], time.time()
                with self._lock:
                    self.accepted[job.ticket_id] = job
                return
            if response.status_code < 500 and response.status_code != 429:
                with self._lock:
                    self.refused.append(f"{response.status_code} {response.text[:300]}")
                return
            time.sleep(min(float(response.headers.get("Retry-After") or 0.3), 2.0))
        with self._lock:
            self.given_up.append(job)

    def _count(self, what: str, *, answered: bool = True) -> None:
        with self._lock:
            self.answers[what] += 1
            if not answered:
                self.unanswered.append((time.time(), what))
