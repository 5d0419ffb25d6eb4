"""The API refuses, with a 400 naming the field, what would cost unbounded work or call inside."""

from __future__ import annotations

import time

import pytest

from tests.factories import ticket_payload
from tickets.models import Ticket

URL = "/api/v1/tickets/"


@pytest.fixture
def http(api):
    return api()[0]


def post(http, **fields):
    return http.post(URL, ticket_payload(**fields), format="json")


def assert_refused(response, field: str) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["detail"], response.json()
    assert Ticket.objects.count() == 0


def test_a_body_longer_than_the_limit_once_normalised_is_a_400(http, settings) -> None:
    body = "\u33d8" * 20_000  # 20,000 characters typed, 80,000 after NFKC

    assert_refused(post(http, body=body), "body")
    assert "normalised" in str(post(http, body=body).json()["detail"]["body"])


def test_a_body_at_the_limit_once_normalised_is_accepted(http, settings) -> None:
    assert post(http, body="\u33d8" * 5_000).status_code == 202  # 20,000 once normalised


def test_a_body_of_stacked_combining_marks_is_checked_quickly(http) -> None:
    body = "e" + "\u0301" * 9_999 + "\u0316" * 9_999  # CPython's NFKC alone takes over a second

    started = time.perf_counter()
    response = post(http, body=body)

    assert response.status_code == 202, response.content
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:5555/api/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.0.0.1/hook",
        "http://evil.example@127.0.0.1/",
    ],
)
def test_a_callback_url_into_the_operators_network_is_a_400_naming_the_field(http, settings, url) -> None:
    settings.CALLBACK_ALLOWED_HOSTS = ()

    assert_refused(post(http, callback_url=url), "callback_url")


def test_a_callback_url_on_an_allowed_host_is_accepted(http, settings) -> None:
    settings.CALLBACK_ALLOWED_HOSTS = "127.0.0.1:9000"

    response = post(http, callback_url="http://127.0.0.1:9000/hook")

    assert response.status_code == 202, response.content
    assert Ticket.objects.get().callback_url == "http://127.0.0.1:9000/hook"
