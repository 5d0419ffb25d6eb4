"""Bearer-token authentication of API clients, and per-client throttling."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from tickets.models import Client, hash_token


class ClientTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>`; the token is looked up by its SHA-256."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Client, str] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme != self.keyword or not token.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <token>'")
        client = Client.objects.filter(token_hash=hash_token(token.strip()), is_active=True).first()
        if client is None:
            raise exceptions.AuthenticationFailed("invalid or inactive token")
        return client, token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class IsClient(permissions.BasePermission):
    """Only an authenticated API client."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Client)


class ClientRateThrottle(throttling.SimpleRateThrottle):
    """Requests per client, counted in Redis (the cache), shared by every API process."""

    scope = "client"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.user, Client):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
