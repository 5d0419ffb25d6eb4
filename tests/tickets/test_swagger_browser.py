"""Swagger UI's "Try it out" with a pasted API key, in headless Chromium against a live server:
the schema's bearer scheme is what makes "Authorize" send the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from tests import browser
from tests.factories import client_with_token, ticket_make

pytestmark = browser.MARKS
LIST = "[id$='tickets_list']"  # Swagger UI's id for the operation: operations-<tag>-<operationId>


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    driver = browser.chrome(tmp_path / "profile", "1400,2000")
    yield driver
    driver.quit()


def click(wait: WebDriverWait, selector: str) -> None:
    wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, selector))).click()


def test_try_it_out_lists_your_tickets_with_a_pasted_key(chrome, live_server):
    client, key = client_with_token(name="swagger")
    ticket = ticket_make(client, body="from the browser")
    wait = WebDriverWait(chrome, 20)
    chrome.get(f"{live_server.url}/api/docs/")

    click(wait, "button.authorize")
    wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, ".auth-container input"))).send_keys(key)
    click(wait, ".auth-btn-wrapper button.authorize")
    click(wait, "button.btn-done")
    click(wait, f"{LIST} .opblock-summary")
    click(wait, f"{LIST} .try-out__btn")
    click(wait, f"{LIST} button.execute")

    status = wait.until(
        ready.visibility_of_element_located(
            (By.CSS_SELECTOR, f"{LIST} .live-responses-table .response .response-col_status")
        )
    )
    assert status.text == "200"
    assert str(ticket.id) in chrome.find_element(By.CSS_SELECTOR, f"{LIST} .live-responses-table").text
