"""Production refuses to be a lab: no embedded servers, no development key, `check --deploy` clean,
Flower never without a password, `/metrics` not open to the world, admin logins throttled."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory

from project.access import internal_only
from project.flower import flower_argv

ROOT = Path(__file__).resolve().parents[2]


def run_django(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py ...` in a process of its own, with the production settings and `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "PYTEST"))}
    base.pop("DJANGO_SETTINGS_MODULE", None)
    full = {**base, "DJANGO_ENV": "production", **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True)


def servers() -> dict[str, str]:
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "api.example.com",
    }


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL", "SECRET_KEY"])
def test_production_refuses_to_start_without_its_servers_and_key(missing):
    env = {k: v for k, v in servers().items() if k != missing}
    done = run_django("check", **env)
    assert done.returncode != 0
    assert f"{missing} is required when DJANGO_ENV=production" in done.stderr
    assert "var/pg" not in done.stderr  # the embedded Postgres was never started


def test_production_refuses_the_development_key():
    done = run_django("check", **{**servers(), "SECRET_KEY": "dev-only-insecure-key-do-not-use-in-production"})
    assert done.returncode != 0 and "SECRET_KEY is required" in done.stderr


def test_check_deploy_finds_nothing_to_fix_in_the_security_settings():
    done = run_django("check", "--deploy", **servers())
    assert "security.W" not in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize("auth", ["", "admin:", "admin:short", ":a-long-enough-password", "admin:ok-password-12,bob:"])
def test_flower_is_refused_without_a_real_password(auth):
    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH"):
        flower_argv({"FLOWER_BASIC_AUTH": auth})


def test_flower_listens_on_loopback_unless_told_otherwise():
    argv = flower_argv({"FLOWER_BASIC_AUTH": "admin:a-long-enough-password"})
    assert "--address=127.0.0.1" in argv
    wide = flower_argv({"FLOWER_BASIC_AUTH": "admin:a-long-enough-password", "FLOWER_ADDRESS": "0.0.0.0"})
    assert "--address=0.0.0.0" in wide


def test_flower_keeps_its_password_off_the_command_line():
    argv = flower_argv({"FLOWER_BASIC_AUTH": "admin:a-long-enough-password"})
    assert not any("a-long-enough-password" in arg or arg.startswith("--basic-auth") for arg in argv)


@pytest.fixture
def metrics_view():
    from django.http import HttpResponse

    return internal_only(lambda request: HttpResponse("pipeline_tickets_total 1\n"))


@pytest.mark.parametrize("peer", ["203.0.113.9", "10.1.2.3", "2001:db8::1", "not-an-address"])
def test_metrics_are_refused_to_the_world(metrics_view, settings, peer):
    settings.METRICS_TOKEN = ""
    response = metrics_view(RequestFactory().get("/metrics", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR="127.0.0.1"))
    assert response.status_code == 403 and b"pipeline_" not in response.content


def test_metrics_answer_loopback_an_allowed_network_and_the_token(metrics_view, settings):
    settings.METRICS_TOKEN = "scrape-token"
    settings.METRICS_ALLOWED_CIDRS = ["127.0.0.0/8", "10.0.0.0/8"]
    factory = RequestFactory()
    assert metrics_view(factory.get("/metrics", REMOTE_ADDR="127.0.0.1")).status_code == 200
    assert metrics_view(factory.get("/metrics", REMOTE_ADDR="10.4.0.7")).status_code == 200
    with_token = factory.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-token")
    assert metrics_view(with_token).status_code == 200
    wrong = factory.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer guess")
    assert metrics_view(wrong).status_code == 403


def _accepted_on(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    peer = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    return conn, peer


def test_metrics_answer_on_the_metrics_port_and_a_spoofed_host_does_not_open_the_main_one(metrics_view, settings):
    settings.METRICS_TOKEN = ""
    with socket.create_server(("127.0.0.1", 0)) as main, socket.create_server(("127.0.0.1", 0)) as metrics:
        settings.METRICS_PORT = metrics.getsockname()[1]
        factory, outside = RequestFactory(), "203.0.113.9"
        on_metrics, peer1 = _accepted_on(metrics)
        on_main, peer2 = _accepted_on(main)
        try:
            scrape = factory.get("/metrics", REMOTE_ADDR=outside, **{"gunicorn.socket": on_metrics})
            assert metrics_view(scrape).status_code == 200
            spoofed = factory.get(
                "/metrics",
                REMOTE_ADDR=outside,
                HTTP_HOST=f"api.example.com:{settings.METRICS_PORT}",
                SERVER_PORT=str(settings.METRICS_PORT),
                **{"gunicorn.socket": on_main},
            )
            assert metrics_view(spoofed).status_code == 403
        finally:
            for s in (on_metrics, peer1, on_main, peer2):
                s.close()


def test_the_metrics_url_is_guarded(client):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403


def test_admin_logins_are_throttled_after_repeated_failures(client, db, settings):
    get_user_model().objects.create_superuser("root", "root@example.com", "the-right-password")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/admin/login/", {"username": "root", "password": "wrong"}, REMOTE_ADDR="198.51.100.7")
        assert response.status_code == 200  # the form again, with an error
    last = client.post("/admin/login/", {"username": "root", "password": "wrong"}, REMOTE_ADDR="198.51.100.7")
    assert last.status_code == 429
    locked = client.post(
        "/admin/login/", {"username": "root", "password": "the-right-password"}, REMOTE_ADDR="198.51.100.7"
    )
    assert locked.status_code == 429  # even the right password, until the cool-off ends
    assert "_auth_user_id" not in client.session
