import gzip
from functools import partial

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.utils import timezone

from coremetrics.models import ApiToken, Client, Membership, Site
from coremetrics.selectors import dashboard_get
from coremetrics.tenancy import (
    TenantAdmin,
    client_of,
    is_client_admin,
    is_editor,
    membership_of,
)
from coremetrics.tokens import api_token_create, api_tokens_revoke
from delivery.services import manifest_publish
from delivery.tag import client_tag_config, tag_body, tag_snippet

admin.site.site_header = "coremetrics console"
admin.site.site_title = "coremetrics"
admin.site.index_title = "Personalization console"
# The lists are wide (profiles, table versions); the app sidebar would cut them at 1280 px.
admin.site.enable_nav_sidebar = False
admin.site.index_template = "admin/coremetrics/dashboard.html"
_admin_index = admin.site.index


def _dashboard_index(request, extra_context=None):
    """The console's home: the client's dashboard above the list of what can be edited. A
    superuser picks the client (?client=<id>)."""
    client = client_of(request)
    clients = []
    if request.user.is_superuser:
        clients = list(Client.objects.order_by("name"))
        chosen = request.GET.get("client", "")
        client = next((c for c in clients if str(c.pk) == chosen), clients[0] if clients else None)
    dashboard = None
    if client is not None:
        dashboard = dashboard_get(client=client, today=timezone.now().date())
        busiest = max((day["visitors"] for day in dashboard["activity"]["daily"]), default=0)
        for day in dashboard["activity"]["daily"]:
            day["height"] = round(100 * day["visitors"] / (busiest or 1))
    context = {
        **(extra_context or {}),
        "dashboard": dashboard,
        "dashboard_clients": clients,
        "dashboard_can_edit": is_editor(request),
    }
    return _admin_index(request, context)


admin.site.index = _dashboard_index  # type: ignore[method-assign]


class SiteInline(admin.TabularInline):
    model = Site
    extra = 0
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "public_key", "is_active", "is_heavy"]
    list_filter = ["is_heavy"]
    search_fields = ["name", "slug"]
    readonly_fields = ["public_key", "created_at"]
    inlines = [SiteInline]
    change_form_template = "admin/coremetrics/client/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        client = self.get_object(request, object_id)
        if client is not None:
            base = settings.PUBLIC_BASE_URL or request.build_absolute_uri("/")
            pinned = tag_body(client_tag_config(client))
            extra_context = {
                **(extra_context or {}),
                "snippet": tag_snippet(base_url=base, public_key=client.public_key),
                "pinned_snippet": tag_snippet(
                    base_url=base, public_key=client.public_key, pinned=pinned
                ),
                "tag": pinned,
                "tag_gzip_bytes": len(gzip.compress(pinned.body, 9)),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        # Switching a client on or off, and how nginx routes it, are the operator's decisions.
        return fields if request.user.is_superuser else [*fields, "is_active", "is_heavy"]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # Sites (CORS origins), the key and the active switch take effect on every node now.
        transaction.on_commit(partial(manifest_publish, client_id=form.instance.pk))

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        client = client_of(request)
        return queryset.filter(pk=client.pk) if client else queryset.none()

    def has_module_permission(self, request):
        return request.user.is_superuser or membership_of(request.user) is not None

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_change_permission(self, request, obj=None):
        membership = membership_of(request.user)
        is_client_admin = membership is not None and membership.role == Membership.Role.ADMIN
        return request.user.is_superuser or is_client_admin

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "client", "role"]
    list_filter = ["role"]
    autocomplete_fields = ["user"]

    def has_module_permission(self, request):
        return request.user.is_superuser

    has_view_permission = has_change_permission = has_add_permission = has_delete_permission = (
        lambda self, request, obj=None: request.user.is_superuser
    )


@admin.register(ApiToken)
class ApiTokenAdmin(TenantAdmin):
    """A client's API tokens: its admins create them (the key is shown once) and revoke them."""

    list_display = ["name", "prefix", "scope", "created_at", "last_used_at", "revoked_at", "client"]
    list_filter = ["scope"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        # A token is never edited: its scope and name are fixed once it exists.
        if obj is not None:
            return ["client", "name", "scope", *self.readonly_fields]
        return self.readonly_fields

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and is_client_admin(request)

    def has_add_permission(self, request, obj=None):
        return is_client_admin(request)

    def has_change_permission(self, request, obj=None):
        return self.has_view_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # revoked, not deleted: the list keeps what existed

    def has_module_permission(self, request):
        return is_client_admin(request)

    def save_model(self, request, obj, form, change):
        if change:
            return
        client = obj.client if request.user.is_superuser else client_of(request)
        if client is None:
            raise PermissionDenied
        token, key = api_token_create(client=client, name=obj.name, scope=obj.scope)
        obj.pk, obj.prefix, obj.client, obj.key_hash = (
            token.pk,
            token.prefix,
            token.client,
            token.key_hash,
        )
        self.message_user(
            request,
            f"The key of {token.name}, shown this once: {key}",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        revoked = api_tokens_revoke(tokens=queryset)
        self.message_user(request, f"{revoked} token(s) revoked.")
