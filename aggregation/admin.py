from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import path, reverse

from aggregation.models import ConsolidationRun, Event, Profile
from coremetrics.tenancy import ReadOnlyTenantAdmin


@admin.register(Event)
class EventAdmin(ReadOnlyTenantAdmin):
    list_display = ["occurred_at", "type", "visitor_id", "value", "placement_key", "client"]
    list_filter = ["type"]
    search_fields = ["visitor_id", "order_id", "event_id"]
    date_hierarchy = "occurred_at"
    readonly_fields = [field.name for field in Event._meta.fields]


@admin.register(Profile)
class ProfileAdmin(ReadOnlyTenantAdmin):
    list_display = [
        "visitor_id",
        "visits",
        "purchases",
        "total_spent",
        "cart_adds",
        "cart_abandonments",
        "source",
        "last_seen_at",
        "client",
    ]
    list_filter = ["source"]
    search_fields = ["visitor_id", "email"]
    readonly_fields = [field.name for field in Profile._meta.fields]


@admin.register(ConsolidationRun)
class ConsolidationRunAdmin(admin.ModelAdmin):
    """System-wide job runs: superusers only, as they span every client."""

    list_display = ["started_at", "status", "files", "lines", "loaded", "duplicates", "bad_lines"]
    readonly_fields = [field.name for field in ConsolidationRun._meta.fields]
    change_list_template = "admin/aggregation/consolidationrun/change_list.html"

    def get_urls(self):
        run_now = self.admin_site.admin_view(self.run_now)
        return [path("run-now/", run_now, name="aggregation-consolidate-now"), *super().get_urls()]

    def run_now(self, request):
        if request.method == "POST" and request.user.is_superuser:
            from aggregation.tasks import consolidate

            transaction.on_commit(consolidate.delay)
            self.message_user(request, "Consolidation queued.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:aggregation_consolidationrun_changelist"))

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
