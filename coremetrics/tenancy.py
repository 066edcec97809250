"""One scoping rule for the console: a marketer sees and changes only their client's rows (S5).

Every tenant model has a `client` foreign key. The admin classes here filter querysets by it,
limit foreign-key choices to the same client, refuse a row pointing at another client's row,
and set `client` themselves for non-superusers. Roles come from the user's Membership.
"""

from __future__ import annotations

from functools import partial

from django import forms
from django.contrib import admin
from django.db import models, transaction
from django.http import HttpRequest

from coremetrics.models import Client, Membership

EDITOR_ROLES = (Membership.Role.MARKETER, Membership.Role.ADMIN)


def membership_of(user) -> Membership | None:
    if not user.is_authenticated or not user.is_active:
        return None
    try:
        return user.membership
    except Membership.DoesNotExist:
        return None


def client_of(request: HttpRequest) -> Client | None:
    """The client whose data this request may see; None for superusers (all) and outsiders.
    An API token's request sees its token's client."""
    if getattr(request.user, "token", None) is not None:  # coremetrics.tokens.TokenPrincipal
        return request.user.client  # type: ignore[union-attr]
    membership = membership_of(request.user)
    return membership.client if membership is not None else None


def is_client_admin(request: HttpRequest) -> bool:
    """Users, tokens, imports and settings of a client are its admins' (and superusers')."""
    if request.user.is_superuser:
        return True
    membership = membership_of(request.user)
    return membership is not None and membership.role == Membership.Role.ADMIN


def is_editor(request: HttpRequest) -> bool:
    if request.user.is_superuser:
        return True
    membership = membership_of(request.user)
    return membership is not None and membership.role in EDITOR_ROLES


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _has_client(model: type[models.Model]) -> bool:
    return any(field.name == "client" for field in model._meta.get_fields())


class TenantForm(forms.ModelForm):
    """Rejects a foreign key to a row of another client than the row's own."""

    tenant_client: Client | None = None

    def _post_clean(self):
        # The client is not a field of a marketer's form; set it first so that the unique
        # constraints that include it (names, keys) are checked as form errors, not a 500.
        if self.tenant_client is not None and getattr(self.instance, "client_id", 1) is None:
            self.instance.client = self.tenant_client
        super()._post_clean()  # type: ignore[misc]

    def _get_validation_exclusions(self):
        exclusions = super()._get_validation_exclusions()  # type: ignore[misc]
        if getattr(self.instance, "client_id", None) is not None:
            exclusions.discard("client")
        return exclusions

    def clean(self):
        cleaned = super().clean() or {}
        client = (
            self.tenant_client or cleaned.get("client") or getattr(self.instance, "client", None)
        )
        if client is None:
            return cleaned
        foreign = [
            name
            for name, value in cleaned.items()
            for row in (value if isinstance(value, (models.QuerySet, list)) else [value])
            if isinstance(row, models.Model)
            and _has_client(type(row))
            # A row without a client yet is the unsaved parent of an inline: it takes ours.
            and getattr(row, "client_id", None) is not None
            and getattr(row, "client_id", None) != client.pk
        ]
        for name in dict.fromkeys(foreign):
            self.add_error(name, "Choose one of this client's own rows.")
        return cleaned


class TenantScoped(admin.options.BaseModelAdmin):
    """Shared by TenantAdmin and TenantInline."""

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        client = client_of(request)
        if client is None:
            return queryset.none()
        return queryset.filter(client=client)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if not request.user.is_superuser:
            client = client_of(request)
            if related is Client:
                kwargs["queryset"] = (
                    Client.objects.filter(pk=client.pk) if client else Client.objects.none()
                )
            elif _has_client(related):
                kwargs["queryset"] = related._default_manager.filter(client=client)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        related = db_field.related_model
        if not request.user.is_superuser and _has_client(related):
            kwargs["queryset"] = related._default_manager.filter(client=client_of(request))
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if not request.user.is_superuser:
            exclude.append("client")
        return exclude

    def has_module_permission(self, request):
        return request.user.is_superuser or membership_of(request.user) is not None

    def has_view_permission(self, request, obj=None):
        if request.user.is_superuser:
            return True
        client = client_of(request)
        return client is not None and (obj is None or obj.client_id == client.pk)

    def has_add_permission(self, request, obj=None):
        return is_editor(request) and not self.is_read_only

    def has_change_permission(self, request, obj=None):
        return (
            self.has_view_permission(request, obj) and is_editor(request) and not self.is_read_only
        )

    def has_delete_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)

    is_read_only = False


class TenantAdmin(TenantScoped, admin.ModelAdmin):
    form = TenantForm
    # Django 6's default: an address typed without a scheme means https.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        client = None if request.user.is_superuser else client_of(request)
        return type(form.__name__, (form,), {"tenant_client": client})

    def get_list_display(self, request):
        # A marketer's rows are all of one client: the column would only repeat its name.
        columns = super().get_list_display(request)
        if request.user.is_superuser:
            return columns
        return [column for column in columns if column != "client"]

    def get_list_filter(self, request):
        # Django's related filter offers every row of the related model; offer only those
        # that the visible rows point at.
        return [
            (name, admin.RelatedOnlyFieldListFilter)
            if isinstance(name, str) and self._is_relation(name)
            else name
            for name in super().get_list_filter(request)
        ]

    def _is_relation(self, name: str) -> bool:
        try:
            return self.model._meta.get_field(name).is_relation
        except Exception:
            return False

    # Set on the admins of rows a lookup table is built from: a change there queues a rebuild
    # of the client's tables (and so a new manifest) once the change is committed.
    rebuilds_tables = False

    def save_model(self, request, obj, form, change):
        if not request.user.is_superuser:
            obj.client = client_of(request)
        super().save_model(request, obj, form, change)
        self._tables_rebuild([obj.client_id])

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self._tables_rebuild([obj.client_id])

    def delete_queryset(self, request, queryset):
        client_ids = list(queryset.values_list("client_id", flat=True).distinct())
        super().delete_queryset(request, queryset)
        self._tables_rebuild(client_ids)

    def _tables_rebuild(self, client_ids) -> None:
        if not self.rebuilds_tables:
            return
        from segmentation.tasks import build_tables

        for client_id in set(client_ids):
            transaction.on_commit(partial(build_tables.delay, client_id))

    def save_formset(self, request, form, formset, change):
        for inline_form in formset.forms:
            if hasattr(inline_form.instance, "client_id"):
                inline_form.instance.client = form.instance.client
        super().save_formset(request, form, formset, change)


class TenantInline(TenantScoped, admin.TabularInline):
    """An inline whose rows take the parent's client."""

    form = TenantForm

    def get_formset(self, request, obj=None, **kwargs):
        if obj is not None:
            client = obj.client
        elif request.user.is_superuser:
            # A superuser adding the parent picks its client in the same form.
            client_id = _int_or_none(request.POST.get("client"))
            client = Client.objects.filter(pk=client_id).first() if client_id else None
        else:
            client = client_of(request)
        form = type(self.form.__name__, (self.form,), {"tenant_client": client})
        return super().get_formset(request, obj, **{**kwargs, "form": form})


class ReadOnlyTenantAdmin(TenantAdmin):
    """Recorded data: marketers review it, nobody edits it by hand."""

    is_read_only = True
