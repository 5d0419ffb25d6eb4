"""A task applied in the caller's thread (`.apply()`) keeps the caller's connection and transaction."""

from __future__ import annotations

import time

from django.db import connection, transaction

from agents.tasks import sweep_stuck_tickets
from tickets.models import Client


def test_a_task_applied_inside_a_transaction_leaves_its_connection_open_past_conn_max_age(transactional_db):
    with transaction.atomic():
        Client.objects.create(name="inside")
        connection.close_at = time.monotonic() - 1  # the connection is older than CONN_MAX_AGE

        sweep_stuck_tickets.apply().get()

        assert Client.objects.filter(name="inside").exists()  # the same, still open, transaction
    assert Client.objects.filter(name="inside").exists()
