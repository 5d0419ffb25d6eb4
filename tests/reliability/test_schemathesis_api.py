"""Schemathesis against the project's own OpenAPI schema (served by the app at /api/schema/).

Positive and negative cases for every operation, through the WSGI app in this process (fast; the
fault suite and test_hostile_input.py go through gunicorn): no 5xx, and every response fits the
schema — a documented status code, the declared body, headers and content type, and invalid
input refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NegativeDataRejectionConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import client_with_token
from tests.reliability.audit import knob

pytestmark = [pytest.mark.reliability]

EXAMPLES = int(knob("EXAMPLES", 240))  # per operation (and the coverage phase adds its own)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
CASES: Counter[str] = Counter()


@pytest.fixture
def api_schema(db: Any) -> Iterator[Any]:
    from project.wsgi import application

    # As Django's test client does: a request must not close the connection that holds the
    # test's transaction (everything is rolled back after the test, and nothing is enqueued).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
        schema.config.generation.update(max_examples=EXAMPLES)
        # 413 (body over MAX_REQUEST_BYTES) is a documented refusal of invalid input too.
        schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(expected_statuses=REFUSALS)
        yield schema
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def token(db: Any) -> str:
    return client_with_token(name="schemathesis")[1]


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES, database=None)
def test_the_api_answers_every_generated_request_within_its_schema(case: Any, token: str) -> None:
    CASES[case.operation.label] += 1
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)


def test_schemathesis_ran_at_least_a_thousand_cases_across_every_operation(api_schema: Any) -> None:
    if not CASES:
        pytest.skip("the generated cases did not run in this session")
    operations = {result.ok().label for result in api_schema.get_all_operations()}
    print(f"schemathesis: {sum(CASES.values())} cases: {dict(CASES)}")
    assert set(CASES) == operations
    assert sum(CASES.values()) >= 1000
