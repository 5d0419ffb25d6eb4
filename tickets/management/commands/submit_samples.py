"""`manage.py submit_samples`: post a few sample requests to the running API and watch them resolve."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

SAMPLES = [
    {"customer_ref": "alice", "body": "My card still hasn't arrived, it's been ten days."},
    {"customer_ref": "bob", "body": "I think I lost my card on the bus yesterday."},
    {"customer_ref": "carol", "body": "What exchange rate do you use when I pay abroad?"},
    {"customer_ref": "dave", "body": "Can I speak to a real person please? My transfer is missing."},
    {"customer_ref": "erin", "subject": "Top up", "body": "My top up failed, why?\n\n--\nErin\nSent from my phone"},
    {"customer_ref": "frank", "body": "How old do you need to be to open an account?"},
]
TERMINAL = {"resolved", "awaiting_review", "dead_lettered"}


class Command(BaseCommand):
    help = "Submit sample requests over HTTP and print where each one ends."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--token", default=None, help="Default: var/demo_token from bootstrap_demo.")
        parser.add_argument("--wait", action="store_true", help="Wait for the API to come up first.")
        parser.add_argument("--timeout", type=float, default=120.0)

    def handle(self, *args: Any, url: str, token: str | None, wait: bool, timeout: float, **options: Any) -> None:
        token = token or (Path(settings.BASE_DIR) / "var" / "demo_token").read_text().strip()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        deadline = time.monotonic() + timeout
        while wait:
            try:
                http.get("/healthz").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise CommandError(f"the API at {url} did not come up") from None
                time.sleep(1)
        ids = []
        for i, sample in enumerate(SAMPLES):
            response = http.post(
                "/api/v1/tickets/", json=sample, headers={"Idempotency-Key": f"sample-{i}-{int(time.time())}"}
            )
            if response.status_code not in (200, 202):
                raise CommandError(f"POST failed: {response.status_code} {response.text}")
            ids.append(response.json()["id"])
        self.stdout.write(f"Submitted {len(ids)} sample requests; waiting for them to settle...")
        pending = set(ids)
        results: dict[str, dict[str, Any]] = {}
        while pending and time.monotonic() < deadline:
            for ticket_id in list(pending):
                body = http.get(f"/api/v1/tickets/{ticket_id}/").json()
                if body["status"] in TERMINAL:
                    results[ticket_id] = body
                    pending.discard(ticket_id)
            time.sleep(0.5)
        for ticket_id in ids:
            body = results.get(ticket_id) or http.get(f"/api/v1/tickets/{ticket_id}/").json()
            stages = " → ".join(f"{t['stage']}({t['tier'] or t['status']})" for t in body.get("trace", []))
            self.stdout.write(f"  {body['status']:<16} {body['intent'] or '-':<28} {body['body'][:50]!r}  [{stages}]")
        self.stdout.write("See them at /api/v1/tickets/, in the admin (/admin/) and in Flower (:5555).")
