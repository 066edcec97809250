"""The API's filters by related rows, scoped to the request's client (S5)."""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend

from coremetrics.tenancy import _has_client


class TenantFilterSet(django_filters.FilterSet):
    """Filters by a related row choose among the request's client's rows only: another
    client's id is as unknown as an id nobody has (a 400 either way, never a hint that it
    exists)."""

    def __init__(self, *args: Any, request=None, **kwargs: Any) -> None:
        # Imported here: the REST framework reads this module while it sets itself up.
        from coremetrics.api import request_client

        super().__init__(*args, request=request, **kwargs)
        client = request_client(request) if request is not None else None
        if client is None:
            return
        for name, field in self.form.fields.items():
            queryset = getattr(field, "queryset", None)
            if queryset is not None and _has_client(queryset.model):
                self.form.fields[name].queryset = queryset.filter(client=client)


class TenantFilterBackend(DjangoFilterBackend):
    filterset_base = TenantFilterSet
