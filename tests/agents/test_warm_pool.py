"""The cheap stages' worker loads its classifier tiers before its prefork pool forks (the children,
and every replacement of one, start warm); other workers do not load them at all."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from django.db import connection

from agents.intents.rules import RulesTier
from agents.pipeline.context import parts
from agents.tasks import _warm_before_the_pool


def _worker(*queues: str) -> Any:
    return SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=set(queues)))))


def test_the_worker_of_the_first_lanes_builds_its_tiers_and_closes_its_connection_before_forking(
    transactional_db: Any, intents: None
) -> None:
    connection.ensure_connection()

    _warm_before_the_pool(sender=_worker("parse.3", "classify"))

    tiers = parts._tiers
    assert tiers, "the tiers were not built before the pool started"
    rules = next(t for t in tiers if isinstance(t, RulesTier))
    assert rules._compiled, "the rules were not compiled"
    assert connection.connection is None, "a connection the children would share was left open"


def test_a_worker_that_never_classifies_does_not_load_the_tiers(transactional_db: Any, intents: None) -> None:
    _warm_before_the_pool(sender=_worker("execute", "webhooks"))

    assert parts._tiers is None
