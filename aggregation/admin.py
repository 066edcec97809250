from datetime import date, timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from aggregation.imports import mapping_validate
from aggregation.models import (
    ConsolidationRun,
    Event,
    ImportJob,
    ImportMapping,
    Profile,
    VisitorLink,
    VisitorSeparation,
)
from aggregation.selectors import activity_summary
from aggregation.services import dead_letter_path, dead_letters, quarantine_requeue
from aggregation.services.identities import identities_separate
from aggregation.services.imports import error_report_path, import_job_create
from coremetrics.models import Client
from coremetrics.tenancy import (
    ReadOnlyTenantAdmin,
    TenantAdmin,
    TenantForm,
    client_of,
    is_editor,
)


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
    change_list_template = "admin/aggregation/profile/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("activity/", view(self.activity), name="aggregation-activity"),
            *super().get_urls(),
        ]

    def activity(self, request):
        """Review activity by criteria over any period (S1), before building a segment."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        # A member's page opens on the last 30 days; a superuser first chooses a client.
        data = None
        if request.GET or not request.user.is_superuser:
            data = request.GET.copy()
            today = timezone.now().date()
            data.setdefault("last", today.isoformat())
            data.setdefault("first", (today - timedelta(days=29)).isoformat())
        form = ActivityForm(data, is_superuser=request.user.is_superuser)
        client = client_of(request)
        summary = None
        if form.is_bound and form.is_valid():
            if request.user.is_superuser:
                client = form.cleaned_data["client"]
            if client is None:
                raise PermissionDenied
            first, last = form.period()
            summary = activity_summary(client_id=client.pk, first=first, last=last)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Activity of {client}" if client else "Activity",
            "opts": self.model._meta,
            "form": form,
            "summary": summary,
            "charts": _charts(summary) if summary else [],
        }
        return TemplateResponse(request, "admin/aggregation/activity.html", context)


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
            path(
                "dead-letters/quarantine/<str:name>/requeue",
                view(self.quarantine_requeue),
                name="aggregation-quarantine-requeue",
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

    def quarantine_requeue(self, request, name):
        if not request.user.is_superuser or request.method != "POST":
            raise PermissionDenied
        try:
            quarantine_requeue(name=name)
        except FileNotFoundError:
            raise Http404("no such file") from None
        self.message_user(
            request,
            f"{name} is back in the spool; the next consolidation loads it.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:aggregation-dead-letters"))

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


class ImportMappingForm(TenantForm):
    def clean_columns(self):
        try:
            return mapping_validate(self.cleaned_data["columns"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None


@admin.register(ImportMapping)
class ImportMappingAdmin(TenantAdmin):
    form = ImportMappingForm
    list_display = ["name", "format", "client"]


class ImportUploadForm(forms.Form):
    mapping = forms.ModelChoiceField(queryset=ImportMapping.objects.none())
    file = forms.FileField(help_text="CSV or JSON lines, UTF-8 (with or without BOM) or Latin-1.")

    def __init__(self, *args, mappings, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["mapping"] = forms.ModelChoiceField(queryset=mappings)


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyTenantAdmin):
    """Uploads of legacy customer records: progress, outcome and the error report."""

    list_display = ["created_at", "file_name", "status", "progress", "rows", "records",
                    "rejected_rows", "client"]  # fmt: skip
    readonly_fields = [
        *[field.name for field in ImportJob._meta.fields if field.name != "path"],
        "progress",
        "error_report",
    ]
    change_list_template = "admin/aggregation/importjob/change_list.html"
    exclude = ["path"]  # the server's file system is nobody's business in the console

    @admin.display(description="Progress")
    def progress(self, job):
        return f"{job.progress_percent}%"

    @admin.display(description="Error report")
    def error_report(self, job):
        if not job.rejected_rows:
            return "-"
        url = reverse("admin:aggregation-import-errors", args=[job.pk])
        return format_html(
            '<a href="{}" id="error-report">Download ({} rows)</a>', url, job.rejected_rows
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("upload/", view(self.upload), name="aggregation-import-upload"),
            path("<int:job_id>/errors.csv", view(self.errors), name="aggregation-import-errors"),
            *super().get_urls(),
        ]

    def upload(self, request):
        if not is_editor(request):
            raise PermissionDenied
        form = ImportUploadForm(
            request.POST or None, request.FILES or None, mappings=self._mappings(request)
        )
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            job = import_job_create(
                mapping=form.cleaned_data["mapping"], file_name=upload.name, source=upload
            )
            self.message_user(request, f"{upload.name} uploaded; converting.", messages.SUCCESS)
            return HttpResponseRedirect(
                reverse("admin:aggregation_importjob_change", args=[job.pk])
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Import customer records",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/aggregation/importjob/upload.html", context)

    def errors(self, request, job_id):
        job = self.get_queryset(request).filter(pk=job_id).first()
        if job is None:
            raise Http404("no such import")
        report = error_report_path(job)
        if not report.exists():
            raise Http404("no error report")
        return FileResponse(
            report.open("rb"), as_attachment=True, filename=f"import-{job.pk}-errors.csv"
        )

    def _mappings(self, request):
        mappings = ImportMapping.objects.all()
        return mappings if request.user.is_superuser else mappings.filter(client=client_of(request))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        refresh = job is not None and job.status in (
            ImportJob.Status.PENDING,
            ImportJob.Status.RUNNING,
        )
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "refresh": refresh}
        )


@admin.register(VisitorLink)
class VisitorLinkAdmin(ReadOnlyTenantAdmin):
    """Visitors joined under another's profile by email (B5), and a way to separate them."""

    list_display = ["visitor_id", "canonical_id", "email", "linked_at", "client"]
    search_fields = ["visitor_id", "canonical_id", "email"]
    actions = ["separate"]

    @admin.action(description="Separate the selected visitors again (their own profiles)")
    def separate(self, request, queryset):
        if not is_editor(request):
            raise PermissionDenied
        separated = identities_separate(links=list(queryset))
        self.message_user(request, f"Separated {separated} visitor(s).", messages.SUCCESS)

    def get_actions(self, request):
        # Read-only for rows, but separating is an editor's action.
        actions = super().get_actions(request)
        return actions if is_editor(request) else {}


@admin.register(VisitorSeparation)
class VisitorSeparationAdmin(TenantAdmin):
    """Joins undone by hand; deleting one lets that visitor join under the email again."""

    list_display = ["visitor_id", "email", "separated_at", "client"]
    search_fields = ["visitor_id", "email"]
    readonly_fields = ["client", "visitor_id", "email", "separated_at"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.has_view_permission(request, obj) and is_editor(request)


ACTIVITY_MAX_DAYS = 366


class ActivityForm(forms.Form):
    client = forms.ModelChoiceField(queryset=Client.objects.order_by("name"), required=False)
    first = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    last = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, data=None, *, is_superuser: bool):
        super().__init__(data)
        self.is_superuser = is_superuser
        if not is_superuser:
            del self.fields["client"]

    def clean(self):
        cleaned = super().clean() or {}
        if self.is_superuser and not cleaned.get("client"):
            raise forms.ValidationError("Choose a client.")
        first, last = self.period() if not self.errors else (None, None)
        if first and last and first > last:
            raise forms.ValidationError("The first day is after the last.")
        if first and last and not (date(2000, 1, 1) <= first and last <= date(2099, 12, 31)):
            raise forms.ValidationError("Days from 2000 to 2099 only.")
        if first and last and (last - first).days >= ACTIVITY_MAX_DAYS:
            raise forms.ValidationError(f"At most {ACTIVITY_MAX_DAYS} days at a time.")
        return cleaned

    def period(self):
        """The chosen days; without a first day, the 30 days up to the last (or today)."""
        last = self.cleaned_data.get("last") or timezone.now().date()
        first = self.cleaned_data.get("first") or last - timedelta(days=29)
        return first, last


def _charts(summary: dict) -> list[dict]:
    """Bar charts of the summary: each bar as a share of its chart's largest (the daily
    series gets its bars' heights the same way)."""
    busiest = max((day["visitors"] for day in summary["daily"]), default=0) or 1
    for day in summary["daily"]:
        day["height"] = round(100 * day["visitors"] / busiest)
    charts = []
    for key, title in [
        ("purchasers", "Purchasers and non-purchasers"),
        ("orders", "Visitors by number of purchases"),
        ("spent", "Visitors by dollars spent"),
        ("visits", "Visitors by number of visits"),
        ("sources", "How visitors came (first visit)"),
    ]:
        rows = summary[key]
        top = max((count for _, count in rows), default=0) or 1
        total = sum(count for _, count in rows) or 1
        charts.append(
            {
                "key": key,
                "title": title,
                "bars": [
                    {
                        "label": label,
                        "count": count,
                        "width": round(100 * count / top),
                        "share": round(100 * count / total),
                    }
                    for label, count in rows
                ],
            }
        )
    return charts
