"""Settings that refuse to start unsafe, and admin-login throttling keyed on the real client."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.project.test_production import run_django, servers


def test_production_refuses_to_start_with_debug_on():
    done = run_django("check", **servers(), DEBUG="1")
    assert done.returncode != 0
    assert "DEBUG cannot be on when DJANGO_ENV=production" in done.stderr


@pytest.mark.parametrize("name", ["produciton", "prod", "staging"])
def test_an_unknown_django_env_refuses_to_start(name):
    done = run_django("check", **servers(), DJANGO_ENV=name)
    assert done.returncode != 0
    assert f"DJANGO_ENV={name!r} is not one of" in done.stderr


def _login(client, password: str, forwarded: str):
    return client.post(
        "/admin/login/",
        {"username": "root", "password": password},
        REMOTE_ADDR="10.0.0.2",  # the proxy in front: every client's requests come from it
        HTTP_X_FORWARDED_FOR=forwarded,
    )


def test_behind_a_proxy_a_lockout_holds_the_client_not_the_proxy(client, db, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    get_user_model().objects.create_superuser("root", "root@example.com", "the-right-password")
    for i in range(settings.AXES_FAILURE_LIMIT):
        # the attacker writes a new address in front each time: only the proxy's entry counts
        last = _login(client, "wrong", f"192.0.2.{i}, 198.51.100.7")
    assert last.status_code == 429
    assert _login(client, "the-right-password", "198.51.100.7").status_code == 429  # locked out
    assert _login(client, "the-right-password", "203.0.113.20").status_code == 302  # another client, same proxy


def test_without_trusted_proxies_the_forwarded_header_is_ignored(client, db, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    get_user_model().objects.create_superuser("root", "root@example.com", "the-right-password")
    for i in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "wrong", f"192.0.2.{i}")  # a client cannot pick a fresh address per try
    assert _login(client, "the-right-password", "203.0.113.20").status_code == 429
