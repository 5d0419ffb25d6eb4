"""The public API's contract: status codes, idempotency, tenant isolation, and every bad input."""

from __future__ import annotations

import json
import re
import time
import uuid
from types import SimpleNamespace

import pytest
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from tests.factories import ticket_make, ticket_payload
from tickets.models import Status, Ticket

URL = "/api/v1/tickets/"


@pytest.fixture
def http(api):
    return api()[0]


def post(http, body=None, **headers):
    return http.post(URL, body if body is not None else ticket_payload(), format="json", **headers)


def post_raw(http, raw: bytes, **extra):
    return http.generic("POST", URL, raw, content_type="application/json", **extra)


def test_submitting_a_request_answers_202_with_the_ticket_and_its_url(http):
    response = post(http)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "received" and body["priority"] == "normal"
    assert body["url"] == f"/api/v1/tickets/{body['id']}/" == response["Location"]
    assert Ticket.objects.get(pk=body["id"]).customer_ref == "cust-1"


def test_a_retry_with_the_same_idempotency_key_returns_the_same_ticket(http):
    first = post(http, HTTP_IDEMPOTENCY_KEY="k-1")
    second = post(http, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second["Idempotent-Replayed"] == "true"
    assert Ticket.objects.count() == 1


def test_the_same_key_with_a_different_body_is_a_conflict_that_stores_nothing(http):
    post(http, HTTP_IDEMPOTENCY_KEY="k-2")
    response = post(http, ticket_payload(body="something else"), HTTP_IDEMPOTENCY_KEY="k-2")
    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_conflict"
    assert Ticket.objects.count() == 1


def test_idempotency_keys_are_per_client(api):
    a, _ = api("a")
    b, _ = api("b")
    assert post(a, HTTP_IDEMPOTENCY_KEY="same").status_code == 202
    assert post(b, HTTP_IDEMPOTENCY_KEY="same").status_code == 202
    assert Ticket.objects.count() == 2


def test_a_client_sees_only_its_own_tickets(api):
    a, client_a = api("a")
    b, client_b = api("b")
    mine = ticket_make(client_a)
    theirs = ticket_make(client_b)
    assert a.get(f"{URL}{mine.pk}/").status_code == 200
    assert a.get(f"{URL}{theirs.pk}/").status_code == 404
    assert a.post(f"{URL}{theirs.pk}/replay/").status_code == 404
    assert [t["id"] for t in a.get(URL).json()["results"]] == [str(mine.pk)]


def test_no_token_or_a_wrong_token_is_401(db):
    anonymous = APIClient()
    assert anonymous.get(URL).status_code == 401
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer nope")
    response = anonymous.get(URL)
    assert response.status_code == 401 and response.json()["error"] == "authentication_failed"


def test_the_list_is_cursor_paginated_and_filtered(api):
    http, client = api()
    for i in range(5):
        ticket_make(
            client,
            body=f"t{i}",
            status=Status.RESOLVED if i % 2 else Status.AWAITING_REVIEW,
            intent="card_arrival" if i < 2 else "",
        )
    page = http.get(URL, {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"]
    rest = http.get(page["next"]).json()
    assert len(rest["results"]) == 2
    assert {t["status"] for t in http.get(URL, {"status": "resolved"}).json()["results"]} == {"resolved"}
    assert len(http.get(URL, {"intent": "card_arrival"}).json()["results"]) == 2
    assert http.get(URL, {"created_after": "2999-01-01T00:00:00Z"}).json()["results"] == []
    assert http.get(URL, {"status": "bogus"}).status_code == 400
    assert http.get(URL, {"created_after": "yesterday"}).status_code == 400


def test_replaying_a_ticket_that_is_not_dead_lettered_is_a_conflict(api):
    http, client = api()
    ticket = ticket_make(client, status=Status.RESOLVED)
    response = http.post(f"{URL}{ticket.pk}/replay/")
    assert response.status_code == 409 and response.json()["error"] == "not_replayable"


def test_a_client_over_its_rate_is_told_when_to_come_back(api, settings):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"client": "2/min"}}
    from rest_framework.settings import api_settings

    from tickets.auth import ClientRateThrottle

    api_settings.reload()
    ClientRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        http, _ = api()
        assert http.get(URL).status_code == 200
        assert http.get(URL).status_code == 200
        response = http.get(URL)
        assert response.status_code == 429 and int(response["Retry-After"]) > 0
    finally:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"client": "6000/min"}}
        api_settings.reload()
        ClientRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        cache.clear()


def test_the_answer_to_a_submission_is_what_the_output_serializer_declares(http):
    from tickets.api.serializers import TicketOutputSerializer

    payload = ticket_payload(metadata={"a": [1, {"b": None}]}, priority="high", callback_url="https://example.com/cb")
    response = post(http, payload)
    ticket = Ticket.objects.get(pk=response.json()["id"])
    assert response.json() == json.loads(JSONRenderer().render(TicketOutputSerializer(ticket).data))


def _throttle(monkeypatch, rate, at):
    from tickets.auth import ClientRateThrottle

    throttle = ClientRateThrottle()
    throttle.num_requests, throttle.duration = ClientRateThrottle().parse_rate(rate)
    monkeypatch.setattr(throttle, "timer", lambda: at[0])
    return throttle


def test_the_throttle_weighs_the_previous_window_by_how_much_of_it_is_still_inside(db, monkeypatch):
    from tickets.models import Client

    request = SimpleNamespace(user=Client(pk=uuid.uuid4().int % 10**12))
    start = (time.time() // 60 + 1) * 60  # a window boundary (the windows are aligned to the epoch)
    at = [start + 1]
    throttle = _throttle(monkeypatch, "10/min", at)
    assert all(throttle.allow_request(request, None) for _ in range(10))
    assert not throttle.allow_request(request, None)  # 10 in this window
    at[0] = start + 60 + 15  # three quarters of the previous window still inside: 7.5 of its 10 count
    assert all(throttle.allow_request(request, None) for _ in range(3))
    assert not throttle.allow_request(request, None)  # 3 + 7.5 ≥ 10
    assert throttle.wait() == pytest.approx(3, abs=0.01)  # once 70 % of it is inside: 3 + 7 < 10
    at[0] = start + 60 + 57  # a twentieth left: 0.5 of a request counts
    assert throttle.allow_request(request, None)


def test_the_throttle_lets_requests_through_while_redis_is_unreachable(db, monkeypatch, caplog):
    import redis

    from tickets.auth import ClientRateThrottle
    from tickets.models import Client

    def down(**_):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(ClientRateThrottle, "_script", down)
    throttle = _throttle(monkeypatch, "1/min", [time.time()])
    request = SimpleNamespace(user=Client(pk=1))
    assert throttle.allow_request(request, None) and throttle.allow_request(request, None)
    assert "throttle not applied" in caplog.text


def test_the_cache_keeps_one_redis_client_per_server(db):
    from django.core.cache import cache

    assert cache._cache.get_client() is cache._cache.get_client(write=True)
    cache.set("k", [1, 2], 5)
    assert cache.get("k") == [1, 2]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"customer_ref": "x"}, "body"),
        (ticket_payload(body=""), "body"),
        (ticket_payload(body="   "), "body"),
        (ticket_payload(body=123), "body"),
        (ticket_payload(body=["a"]), "body"),
        (ticket_payload(priority="whenever"), "priority"),
        (ticket_payload(metadata="not an object"), "metadata"),
        (ticket_payload(callback_url="not a url"), "callback_url"),
        (ticket_payload(surprise=True), "surprise"),
        (ticket_payload(body="nul \x00 inside"), "body"),
        (ticket_payload(body="x" * 20_001), "body"),
        (ticket_payload(metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}), "metadata"),
        (ticket_payload(metadata={"k": "nul\x00"}), "metadata"),
        (ticket_payload(channel="Not A Channel!"), "channel"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem_and_stores_nothing(http, payload, field):
    response = post(http, payload)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error"
    if field:
        assert field in body["detail"]
    assert Ticket.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"body": "\xff\xfe invalid utf-8"}', b"[1, 2, 3]", b'"just a string"', b"null"],
)
def test_malformed_or_non_object_json_is_a_400(http, raw):
    response = post_raw(http, raw)
    assert response.status_code == 400, response.content
    assert response.json()["error"] in ("parse_error", "validation_error")
    assert Ticket.objects.count() == 0


def test_a_lone_surrogate_is_refused(http):
    response = post_raw(http, b'{"body": "bad \\ud800 text"}')
    assert response.status_code == 400
    assert Ticket.objects.count() == 0


def test_a_body_over_the_documented_limit_is_413(http, settings):
    raw = b'{"body": "' + b"a" * (settings.MAX_REQUEST_BYTES + 10) + b'"}'
    response = post_raw(http, raw)
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"
    assert Ticket.objects.count() == 0


def test_a_wrong_content_type_is_415(http):
    response = http.generic("POST", URL, b"body=hello", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert Ticket.objects.count() == 0


def test_the_openapi_schema_and_swagger_ui_are_served_without_internet(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/tickets/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content and b"cdn.jsdelivr" not in docs.content


def _queue_messages(queue: str, n: int) -> None:
    from celery import current_app
    from kombu import Queue

    with current_app.connection_for_write() as conn:
        producer = conn.Producer()
        for _ in range(n):
            producer.publish({"noop": True}, routing_key=queue, declare=[Queue(queue)])


@pytest.fixture
def bounded(settings):
    """Backpressure at a bound of 8 queued messages and 4 tickets in flight (a floor of 1 each), the
    queues and the tenants' counts empty before and after."""
    from celery import current_app

    from agents.pipeline import tenants
    from tickets.api import backpressure

    current_app.control.purge()
    settings.BACKPRESSURE_MAX_QUEUED = 8
    settings.BACKPRESSURE_MAX_IN_FLIGHT, settings.BACKPRESSURE_TENANT_FLOOR = 4, 1
    backpressure.reset()
    tenants.reset()
    yield backpressure
    current_app.control.purge()
    backpressure.reset()
    tenants.reset()


def test_a_tenant_past_its_share_of_work_in_flight_gets_429_and_another_is_still_admitted(api, bounded):
    flooding, flooder = api("flooding")
    quiet, _ = api("quiet")
    assert all(post(flooding).status_code == 202 for _ in range(4))  # alone, its share is the bound

    refused = post(flooding)
    assert refused.status_code == 429
    assert refused.json()["error"] == "overloaded" and int(refused["Retry-After"]) > 0
    assert Ticket.objects.filter(client=flooder).count() == 4  # the refused one is not stored
    assert post(quiet).status_code == 202  # its own share: another tenant's flood does not refuse it
    assert post(quiet).status_code == 202  # two tenants active: 4 / 2 each


def test_a_retry_of_a_known_key_is_not_counted_in_flight_twice(api, bounded):
    http, _ = api("retrying")
    assert post(http, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 202
    assert all(post(http, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 200 for _ in range(5))
    assert all(post(http).status_code == 202 for _ in range(3))  # 1 + 3 = its share of 4


def test_a_lost_decrement_does_not_lock_a_tenant_out(api, bounded):
    http, client = api("unlucky")
    assert all(post(http).status_code == 202 for _ in range(4))  # its share: the next would be refused
    # Its tickets settle, but the workers that settled them died before telling Redis.
    Ticket.objects.filter(client=client).update(status=Status.RESOLVED)

    assert post(http).status_code == 202  # the refusal recounted from Postgres


def test_past_the_bound_of_the_shared_queues_everyone_is_refused(api, bounded):
    http, _ = api("one")
    other, _ = api("two")
    _queue_messages("classify", 9)

    assert post(http).status_code == 503 and post(other).status_code == 503
    assert Ticket.objects.count() == 0


def test_every_answer_to_a_client_tells_its_rate_limit(http):
    for response in (http.get(URL), post(http, {"body": ""}), http.get(f"{URL}{uuid.uuid4()}/")):
        assert response.status_code in (200, 400, 404)
        assert response["RateLimit-Policy"] == '"client";q=6000;w=60'
        remaining, reset = re.fullmatch(r'"client";r=(\d+);t=(\d+)', response["RateLimit"]).groups()
        assert 0 < int(remaining) < 6000 and 0 < int(reset) <= 60


def test_a_throttled_answer_says_none_are_left_and_when_there_is_room(api, monkeypatch):
    from tickets.auth import ClientRateThrottle

    monkeypatch.setattr(ClientRateThrottle, "THROTTLE_RATES", {"client": "2/min"})
    http, _ = api()
    http.get(URL), http.get(URL)
    response = http.get(URL)
    assert response.status_code == 429 and response.json()["error"] == "throttled"
    assert re.fullmatch(r'"client";r=0;t=\d+', response["RateLimit"])
    assert int(response["RateLimit"].rsplit("=", 1)[1]) == int(response["Retry-After"])


@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
def test_any_unknown_path_under_api_is_a_json_404(client, method):
    for path in ("/api/nope", "/api/v1/tickets", "/api/v2/tickets/", "/api/v1/tickets/x/y/z/"):
        response = getattr(client, method)(path)
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json" and response.json()["error"] == "not_found"


def test_a_method_an_api_path_does_not_take_is_a_json_405(http):
    response = http.delete(URL)
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_the_schema_states_the_bearer_scheme_unique_operation_ids_and_the_error_shape(client):
    schema = client.get("/api/schema/?format=json").json()
    assert schema["openapi"].startswith("3.1")
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"]
    }  # fmt: skip
    operations = [op for item in schema["paths"].values() for op in item.values()]
    assert sorted(op["operationId"] for op in operations) == [
        "tickets_callback_resend", "tickets_create", "tickets_list", "tickets_replay", "tickets_retrieve"
    ]  # fmt: skip
    for op in operations:
        assert op["security"] == [{"bearerAuth": []}]
        for code, response in op["responses"].items():
            assert "RateLimit" in response["headers"]
            if int(code) >= 400 and code != "414":  # the web server's answer, in its own format
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert {"401", "429", "503"} <= set(op["responses"])


def test_the_schema_describes_each_callback_event_as_a_signed_webhook(client):
    schema = client.get("/api/schema/?format=json").json()
    assert set(schema["webhooks"]) == {"ticket.resolved", "ticket.awaiting_review", "ticket.dead_lettered"}
    for name, item in schema["webhooks"].items():
        headers = {p["name"] for p in item["post"]["parameters"]}
        assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers
        ref = item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        payload = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert payload["properties"]["event"]["enum"] == [name]


def test_swagger_ui_keeps_a_pasted_key(client):
    page = client.get("/api/docs/").content.decode()
    assert "persistAuthorization" in page


def test_an_unexpected_error_under_api_is_a_json_500(api, monkeypatch):
    from tickets.api import views as ticket_api

    def broken(**_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ticket_api, "ticket_list", broken)
    http, _ = api()
    http.raise_request_exception = False
    response = http.get(URL)
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json" and response.json()["error"] == "server_error"


def test_a_settled_tickets_callback_can_be_resent_and_nothing_else(api, monkeypatch):
    from tests.factories import ticket_make
    from tickets.webhooks import resend

    drains: list[float | None] = []
    monkeypatch.setattr(resend, "drain_schedule", lambda countdown=None: drains.append(countdown))
    http, client = api("resender")
    other, _ = api("someone-else")
    settled = ticket_make(client, status=Status.RESOLVED, reply="done")
    in_flight = ticket_make(client, status="deciding")

    response = http.post(f"/api/v1/tickets/{settled.pk}/callback/")
    assert response.status_code == 202 and response.json()["id"] == str(settled.pk)
    settled.refresh_from_db()
    assert settled.callback_due_at is not None and drains == [None]  # due now, a drain scheduled

    refused = http.post(f"/api/v1/tickets/{in_flight.pk}/callback/")
    assert refused.status_code == 409 and refused.json()["error"] == "not_settled"
    assert other.post(f"/api/v1/tickets/{settled.pk}/callback/").status_code == 404  # not its ticket
    in_flight.refresh_from_db()
    assert in_flight.callback_due_at is None
