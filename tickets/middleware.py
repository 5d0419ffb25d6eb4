"""Refuse oversized request bodies before anything reads them."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class BodySizeLimitMiddleware:
    """413 with a JSON error when Content-Length exceeds MAX_REQUEST_BYTES."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return JsonResponse({"error": "bad_request", "detail": "Content-Length is not a number"}, status=400)
            limit = settings.MAX_REQUEST_BYTES
            if length > limit:
                return JsonResponse(
                    {"error": "request_too_large", "detail": f"request body is {length} bytes; the limit is {limit}"},
                    status=413,
                )
        return self.get_response(request)
