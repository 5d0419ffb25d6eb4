"""Debian's headless Chromium for the browser tests: where it is, the marks that skip without it,
and a driver with a fresh profile (`chrome(profile)`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Without the background-networking flags Chromium's calls out are refused by the closed network.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
_missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        bool(_missing),
        reason=f"headless Chromium is not installed ({', '.join(_missing)} missing): "
        "apt-get install -y chromium chromium-driver",
    ),
]


def chrome(profile: Path, window: str) -> webdriver.Chrome:
    """A headless Chromium of `window` size ("1600,1000") with its profile in `profile`."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver
