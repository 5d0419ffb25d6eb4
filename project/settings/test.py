"""The test suite (pytest.ini names this module): development's servers, but each test session
gets its own database (`test_agents_<run id>`), Redis database 15 and its own broker keys and cache
prefix, so two sessions on one machine (or a session beside `make run`) never take each other's
tasks or rows. Subprocesses the tests start (the fault suite's system) use their own settings."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from project.settings.development import *  # noqa: F403
from project.settings.development import DATABASES, REDIS_URL, servers
from project.settings.env import env

ENV = "test"
TEST_RUN_ID = env.str("TEST_RUN_ID", default="") or str(os.getpid())
BROKER_KEY_PREFIX = f"test{TEST_RUN_ID}:"
_redis = env.str("REDIS_TEST_URL", default="") or urlsplit(REDIS_URL)._replace(path="/15").geturl()
globals().update(
    servers(
        {**DATABASES["default"], "TEST": {"NAME": f"test_agents_{TEST_RUN_ID}"}}, _redis, key_prefix=BROKER_KEY_PREFIX
    )
)
# --- Deploy (#14): TEST_BROKER_URL runs the session on another broker, e.g. RabbitMQ:
# amqp://guest:guest@127.0.0.1:5672/<vhost>. Give each session a vhost of its own (.ci/run makes one
# per run); on Redis the session's key prefix keeps sessions apart.
if env.str("TEST_BROKER_URL", default=""):
    CELERY_BROKER_URL = env.str("TEST_BROKER_URL")
