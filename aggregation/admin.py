from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from aggregation.models import ConsolidationRun, Event, Profile
from aggregation.services import dead_letter_path, dead_letters
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
        view = self.admin_site.admin_view
        return [
            path("run-now/", view(self.run_now), name="aggregation-consolidate-now"),
            path("dead-letters/", view(self.dead_letters), name="aggregation-dead-letters"),
            path(
                "dead-letters/<str:kind>/<str:name>",
                view(self.dead_letter_download),
                name="aggregation-dead-letter-download",
            ),
            *super().get_urls(),
        ]

    def dead_letters(self, request):
        if not request.user.is_superuser:
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Dead letters and quarantined spool files",
            "files": dead_letters(),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/aggregation/dead_letters.html", context)

    def dead_letter_download(self, request, kind, name):
        if not request.user.is_superuser:
            raise PermissionDenied
        try:
            path = dead_letter_path(kind=kind, name=name)
        except FileNotFoundError:
            raise Http404("no such file") from None
        return FileResponse(path.open("rb"), as_attachment=True, filename=name)

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
