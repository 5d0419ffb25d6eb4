"""A reviewer works the queue in a real browser: headless Chromium, the live admin, the real pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from reviews.models import Review
from reviews.services import reviewer_create
from tests import browser
from tests.conftest import wait_for
from tests.factories import ticket_make, ticket_payload
from tickets.models import Status, Ticket

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
pytestmark = [
    *browser.MARKS,
    pytest.mark.pipeline,
]


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = browser.chrome(tmp_path / "profile", "1600,1000")
    yield driver
    driver.quit()


def shoot(driver: webdriver.Chrome, name: str) -> Path:
    """Save a full-page screenshot as a test artefact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1600, max(1000, min(int(height) + 40, 3000)))
    driver.save_screenshot(str(path))
    return path


def submit(http: Any, **overrides: Any) -> str:
    response = http.post("/api/v1/tickets/", ticket_payload(**overrides), format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_a_reviewer_logs_in_claims_corrects_and_resolves_a_review_and_sees_the_ticket_resolved(
    pipeline, live_server, chrome, api
):
    http, client = api()
    for body in ("Where is my card? I ordered it last week.", "Can I change my PIN online?"):
        ticket_make(client, customer_ref="bob", body=body, status=Status.RESOLVED, intent="card_arrival")
    sky = submit(http, body="Why is the sky blue on Tuesdays? Also my card never came", customer_ref="bob",
                 priority="high")  # fmt: skip
    refund = submit(http, body="Where is my refund?", customer_ref="zoe")
    for ticket_id in (sky, refund):
        wait_for(lambda t=ticket_id: Ticket.objects.get(pk=t).status == Status.AWAITING_REVIEW, what="escalation")
    reviewer_create(username="rita", password="rita-reviews-42")
    wait = WebDriverWait(chrome, 15)

    chrome.get(f"{live_server.url}/admin/login/?next=/admin/reviews/review/")
    chrome.find_element(By.NAME, "username").send_keys("rita")
    chrome.find_element(By.NAME, "password").send_keys("rita-reviews-42")
    chrome.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "queue-summary")))
    assert chrome.find_element(By.ID, "open-count").text == "2"
    shoot(chrome, "review-queue")

    chrome.find_element(By.PARTIAL_LINK_TEXT, "Why is the sky blue").click()
    wait.until(ec.element_to_be_clickable((By.NAME, "_claim"))).click()
    wait.until(ec.presence_of_element_located((By.ID, "decision-form")))
    assert "Where is my card?" in chrome.find_element(By.ID, "rv-history").text
    assert "classify" in chrome.find_element(By.ID, "rv-timeline").text
    shoot(chrome, "review-page")

    Select(chrome.find_element(By.ID, "id_intent")).select_by_value("card_arrival")
    reply = chrome.find_element(By.ID, "id_reply")
    assert reply.get_attribute("value").startswith("Hi bob, cards usually arrive")  # the intent's draft
    reply.clear()
    reply.send_keys("Hi bob, your new card ships today.")
    chrome.find_element(By.NAME, "_resolve").click()
    # The claim's page has a success message of its own: wait for the resolve's page (a wait on its text
    # outlives the old page's element going stale), not for any success message.
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".messagelist .success"), "Resolved as card_arrival"))

    wait_for(lambda: Ticket.objects.get(pk=sky).status == Status.RESOLVED, what="the worker to execute")
    chrome.get(f"{live_server.url}/admin/reviews/review/{Review.objects.get(ticket_id=sky).pk}/change/")
    assert chrome.find_element(By.ID, "ticket-status").text == "resolved"
    assert chrome.find_element(By.ID, "review-status").text == "resolved"
    assert chrome.find_element(By.ID, "ticket-reply").text == "Hi bob, your new card ships today."
    shoot(chrome, "review-resolved")
