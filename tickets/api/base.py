"""The API's building blocks: its JSON parser, the base view that tells the rate limit, and the
fields whose schema drf-spectacular cannot infer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import parsers, serializers
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tickets.api.schema import NO_NUL_NOT_EMPTY

METADATA_MAX_BYTES = 8 * 1024
METADATA_MAX_DEPTH = 5


class InvalidCursor(NotFound):
    default_detail = "no such page: pass `cursor` as the `next` or `previous` link gave it"
    default_code = "invalid_cursor"


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {},
        # Limits the schema cannot state without making generated clients unusable (one model per level).
        "description": f"Your own data, returned as given: any JSON object of at most {METADATA_MAX_BYTES} bytes, "
        f"nested at most {METADATA_MAX_DEPTH} levels, with no NUL characters.",
    }
)
class MetadataField(serializers.DictField):
    pass


@extend_schema_field({"type": "string", "minLength": 1, "pattern": NO_NUL_NOT_EMPTY})
class QueryText(serializers.CharField):
    """Query text taken as given (whitespace is not trimmed away into an error); given empty
    (`?intent=`), a 400: leave a filter out to filter nothing."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_blank=False, trim_whitespace=False, **kwargs)


class JSONParser(parsers.JSONParser):
    """DRF's, except that JSON nested past the interpreter's recursion limit is a 400, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc


class ClientApi(APIView):
    """An API view whose every answer to a client tells its rate limit."""

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        limit = getattr(request, "ratelimit", None)
        if limit is not None:
            for name, value in limit.headers().items():
                response[name] = value
        return response
