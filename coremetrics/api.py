"""The REST API's one scoping rule (S5): every viewset here sees and writes its client's rows
only, and every foreign key a client sends must name a row of the same client.

A request's client is its token's, or its console user's (coremetrics.tenancy.client_of).
Superusers read every client's rows; writes always belong to one client, so a superuser
writes through a client's token or the console. Roles: a viewer (or a read token) reads; a
marketer, an admin (or a write token) writes; `admin_only` viewsets (imports) need a client
admin or a write token.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, serializers, viewsets
from rest_framework.request import Request

from coremetrics.models import Client
from coremetrics.tenancy import client_of
from coremetrics.tokens import ApiToken


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema names our per-client tokens."""

    target_class = "coremetrics.tokens.ClientTokenAuthentication"
    name = "clientToken"

    def get_security_definition(self, auto_schema: Any) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A client's API token (cm_...), created in the console.",
        }


def request_client(request: Request) -> Client | None:
    """The client whose rows this API request may see; None for a superuser (every client)."""
    if request.user.is_superuser and not isinstance(request.auth, ApiToken):
        return None
    client = client_of(request)
    if client is None:
        # Authenticated, but neither a token nor a member of any client: nothing to see.
        raise exceptions.PermissionDenied("this account belongs to no client")
    return client


def writing_client(request: Request) -> Client:
    client = request_client(request)
    if client is None:
        raise exceptions.PermissionDenied(
            "a superuser has no client to write for: use a client's API token or the console"
        )
    return client


class ClientScopedField(serializers.PrimaryKeyRelatedField):
    """A foreign key that can only name a row of the request's client (else: 'does not
    exist', the same answer as for an id no one has)."""

    def get_queryset(self) -> models.QuerySet:
        queryset = super().get_queryset()
        request = self.context.get("request")
        client = request_client(request) if request is not None else None
        return queryset if client is None else queryset.filter(client=client)


class TenantModelSerializer(serializers.ModelSerializer):
    """Related fields scoped to the client; the model's per-client unique constraints checked
    as field errors (the client is not a field, so DRF would not check them)."""

    serializer_related_field = ClientScopedField

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        request = self.context.get("request")
        model = self.Meta.model
        instance = self.instance
        client_id = (
            instance.client_id
            if instance is not None
            else (writing_client(request).pk if request is not None else None)
        )
        for constraint in model._meta.constraints:
            fields = getattr(constraint, "fields", ())
            if not isinstance(constraint, models.UniqueConstraint) or constraint.condition:
                continue
            if "client" not in fields or not set(fields) - {"client"} <= set(attrs) | {"client"}:
                continue
            values = {
                name: attrs.get(name, getattr(instance, name, None))
                for name in fields
                if name != "client"
            }
            rows = model.objects.filter(client_id=client_id, **values)
            if instance is not None:
                rows = rows.exclude(pk=instance.pk)
            if rows.exists():
                named = ", ".join(sorted(values))
                raise serializers.ValidationError(
                    {name: [f"already used ({named})"] for name in values}
                )
        return attrs


class ClientScopedQueryset:
    """The view's queryset, of the request's client only (every client's, for a superuser)."""

    request: Request

    def get_queryset(self) -> models.QuerySet:
        queryset = super().get_queryset()  # type: ignore[misc]
        client = request_client(self.request)
        return queryset if client is None else queryset.filter(client=client)


class TenantViewSet(ClientScopedQueryset, viewsets.ModelViewSet):
    """CRUD over one tenant model, scoped to the request's client."""

    admin_only = False

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        serializer.save(client=writing_client(self.request))

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        writing_client(self.request)
        serializer.save()

    def perform_destroy(self, instance: models.Model) -> None:
        writing_client(self.request)
        try:
            self.instance_delete(instance)
        except models.ProtectedError as error:
            names = sorted({str(row) for row in error.protected_objects})[:5]
            raise exceptions.ValidationError(
                {"detail": f"still in use by: {', '.join(names)}"}
            ) from None

    def instance_delete(self, instance: models.Model) -> None:
        instance.delete()


class TenantReadOnlyViewSet(ClientScopedQueryset, viewsets.ReadOnlyModelViewSet):
    pass
