"""API tokens (issue 8): per client, with a scope; created and revoked in the console.

A key is "cm_<prefix>_<secret>", shown once when created; the database keeps its SHA-256 only,
so a stolen database holds no usable key. Requests send `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from coremetrics.models import ApiToken, Client


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, client: Client, name: str, scope: str) -> tuple[ApiToken, str]:
    """A new token and its key (shown once: it cannot be read back)."""
    prefix = secrets.token_hex(4)
    key = f"cm_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        client=client, name=name, scope=scope, prefix=prefix, key_hash=_hash(key)
    )
    return token, key


def api_tokens_revoke(*, tokens) -> int:
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


@dataclass(frozen=True)
class TokenPrincipal:
    """Who a token request acts as: the token's client, never a console user."""

    token: ApiToken
    is_authenticated: bool = True
    is_active: bool = True
    is_superuser: bool = False
    is_staff: bool = False

    @property
    def client(self) -> Client:
        return self.token.client


class ClientTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header.startswith(f"{self.keyword} "):
            return None
        key = header[len(self.keyword) + 1 :].strip()
        token = (
            ApiToken.objects.select_related("client")
            .filter(key_hash=_hash(key), revoked_at__isnull=True, client__is_active=True)
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("unknown or revoked API token")
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return TokenPrincipal(token), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class TokenScope(permissions.BasePermission):
    """A read token reads; writing needs a write token. Console sessions pass (their roles
    are checked where they write)."""

    message = "this API token may only read"

    def has_permission(self, request, view) -> bool:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is None or request.method in permissions.SAFE_METHODS:
            return True
        return token.scope == ApiToken.Scope.WRITE
