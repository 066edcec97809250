"""Roles in the REST API (coremetrics/api.py has the scoping rule)."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from coremetrics.tenancy import is_client_admin, is_editor
from coremetrics.tokens import ApiToken


class ClientRole(permissions.BasePermission):
    """Viewers read; marketers and admins (and write tokens) write; see the module docstring."""

    message = "your role may only read"

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        if isinstance(request.auth, ApiToken):
            return True  # TokenScope decides between read and write tokens
        if getattr(view, "admin_only", False):
            return is_client_admin(request)
        return is_editor(request)
