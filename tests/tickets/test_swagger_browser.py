"""Swagger UI's "Try it out" with a pasted API key, in headless Chromium against a live server:
the schema's bearer scheme is what makes "Authorize" send the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from tests.factories import client_with_token, ticket_make

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2000")
_missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(_missing), reason=f"headless Chromium is not installed ({', '.join(_missing)} missing)"),
]
LIST = "[id$='tickets_list']"  # Swagger UI's id for the operation: operations-<tag>-<operationId>


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
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
