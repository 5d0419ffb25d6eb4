"""Every API error is JSON of one shape: {"error": code, "detail": message or field errors}."""

from __future__ import annotations

from typing import Any

import kombu.exceptions
import redis.exceptions
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

# Postgres, Redis or the broker unreachable: the client should come back, not see a 500.
OUTAGES = (OperationalError, InterfaceError, redis.exceptions.ConnectionError, kombu.exceptions.OperationalError)
OUTAGE_RETRY_AFTER = 5


class LookupUnavailable(exceptions.APIException):
    """A callback URL's name did not resolve now (a timeout, SERVFAIL, too many lookups of this
    client in flight): not bad input, so a 503 the client retries, not a 400."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "lookup_unavailable"
    default_detail = "the callback URL's name did not resolve in time; retry later"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with the body reshaped so clients parse one format."""
    if isinstance(exc, OUTAGES):
        return Response(
            {"error": "unavailable", "detail": "a backing service is down; retry later"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER)},
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"error": "request_too_large", "detail": str(exc)}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, LookupUnavailable):
        response["Retry-After"] = str(OUTAGE_RETRY_AFTER)
    if isinstance(exc, exceptions.ValidationError):
        code = "validation_error"
    elif isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
    else:
        code = "error"
    detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
    response.data = {"error": code, "detail": detail}
    return response
