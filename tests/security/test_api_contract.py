"""The schema and the code agree on /api/v1/tickets/ (what Schemathesis `--checks all` at depth
found): the schema's own example is accepted, a repeated or empty filter is a 400, and the 413 and
414 the server answers are documented."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from tests.factories import ticket_payload


def _schema() -> dict:
    return json.loads(Client().get("/api/schema/?format=json").content)


def test_the_schemas_own_example_request_is_accepted(api):
    http, _ = api()
    example = _schema()["paths"]["/api/v1/tickets/"]["post"]["requestBody"]["content"]["application/json"]
    (body,) = (e["value"] for e in example["examples"].values())

    answer = http.post("/api/v1/tickets/", body, format="json")

    assert answer.status_code == 202, answer.json()


@pytest.mark.parametrize("query", ["page_size=5&page_size=7", "intent=a&intent=b", "status=resolved&status=received"])
def test_a_filter_given_more_than_once_is_a_400_naming_it(api, query):
    http, _ = api()

    answer = http.get(f"/api/v1/tickets/?{query}")

    assert answer.status_code == 400
    name = query.split("=")[0]
    assert answer.json()["detail"] == {name: "given more than once; give it once"}


@pytest.mark.parametrize("name", ["intent", "cursor"])
def test_an_empty_filter_is_a_400_and_the_schema_says_so(api, name):
    http, _ = api()
    http.post("/api/v1/tickets/", ticket_payload(), format="json")

    answer = http.get(f"/api/v1/tickets/?{name}=")

    assert answer.status_code == 400 and name in answer.json()["detail"]
    (parameter,) = (p for p in _schema()["paths"]["/api/v1/tickets/"]["get"]["parameters"] if p["name"] == name)
    assert parameter["schema"]["minLength"] == 1
    assert http.get(f"/api/v1/tickets/?{name}=x").status_code in (200, 404)  # given, it is taken as it is


def test_every_operation_documents_413_and_414(db):
    for path, item in _schema()["paths"].items():
        for method, operation in item.items():
            assert {"413", "414"} <= set(operation["responses"]), f"{method} {path}"


def test_a_list_request_with_a_body_over_the_limit_is_the_documented_413(api, settings):
    http, _ = api()

    answer = http.get("/api/v1/tickets/", CONTENT_LENGTH=str(settings.MAX_REQUEST_BYTES + 1))

    assert answer.status_code == 413 and answer.json()["error"] == "request_too_large"
