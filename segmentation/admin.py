import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from aggregation.selectors import categories_seen
from coremetrics.models import Client
from coremetrics.tenancy import (
    ReadOnlyTenantAdmin,
    TenantAdmin,
    TenantForm,
    client_of,
    is_editor,
)
from segmentation.models import Segment, TableVersion
from segmentation.rules import BEHAVIOURS, COUNT_SQL, FIELDS, RuleError, rule_validate
from segmentation.services import PublishError, segment_audience, table_publish


class RuleBuilderWidget(forms.Textarea):
    """The rule as a builder of conditions and groups (static/segmentation/rule_builder.js),
    over the JSON textarea it keeps in step (which is what the form submits)."""

    template_name = "segmentation/rule_builder_widget.html"

    class Media:
        css = {"all": ["segmentation/rule_builder.css"]}
        js = ["segmentation/rule_builder.js"]

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["vocabulary"] = {
            "fields": {
                key: {
                    "label": field.label,
                    "kind": field.kind,
                    "operators": list(field.operators),
                    "choices": list(field.choices),
                }
                for key, field in FIELDS.items()
            },
            "events": BEHAVIOURS,
            "operators": list(COUNT_SQL),
            "audience_url": reverse("admin:segmentation-segment-audience"),
        }
        return context


class SegmentForm(TenantForm):
    class Meta:
        widgets = {"rule": RuleBuilderWidget}

    def clean_rule(self):
        try:
            return rule_validate(self.cleaned_data["rule"])
        except RuleError as error:
            raise forms.ValidationError(error.errors) from None


@admin.register(Segment)
class SegmentAdmin(TenantAdmin):
    rebuilds_tables = True
    form = SegmentForm
    list_display = ["name", "client", "updated_at"]
    search_fields = ["name"]

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("audience/", view(self.audience), name="segmentation-segment-audience"),
            *super().get_urls(),
        ]

    def audience(self, request):
        """The rule builder's live answer: the audience of a rule being edited, or its errors."""
        if request.method != "POST" or not self.has_view_permission(request):
            raise PermissionDenied
        try:
            body = json.loads(request.body)
        except ValueError:
            return JsonResponse({"errors": ["the request is not JSON"]}, status=400)
        if not isinstance(body, dict):
            return JsonResponse({"errors": ["the request is not a JSON object"]}, status=400)
        client = client_of(request)
        if request.user.is_superuser:
            chosen = body.get("client")
            client = None
            if isinstance(chosen, int) and not isinstance(chosen, bool):
                client = Client.objects.filter(pk=chosen).first()
            if client is None:
                return JsonResponse({"errors": ["choose a client first"]}, status=400)
        if client is None:
            raise PermissionDenied
        try:
            audience = segment_audience(client_id=client.pk, rule=body.get("rule"))
        except RuleError as error:
            return JsonResponse({"errors": error.errors}, status=400)
        return JsonResponse({**audience, "categories": categories_seen(client_id=client.pk)})


VERSION_FIELDS: list[str] = [
    "campaign",
    "number",
    "status",
    "is_pinned",
    "is_stored",
    "visitor_count",
    "moves",
    "per_content",
    "per_segment",
    "conflicts",
    "started_at",
    "finished_at",
    "duration",
    "published_at",
    "checksum",
    "error",
]


@admin.register(TableVersion)
class TableVersionAdmin(ReadOnlyTenantAdmin):
    """The build history (B1): every version with its counts, timings and diff; a version
    still stored can be published by hand (a preview, or a rollback)."""

    list_display = [
        "campaign",
        "number",
        "status",
        "visitor_count",
        "changes",
        "duration",
        "published_at",
        "is_pinned",
        "client",
    ]
    list_filter = ["status", "campaign"]
    fields = tuple(VERSION_FIELDS)
    readonly_fields = tuple(VERSION_FIELDS)
    change_form_template = "admin/segmentation/tableversion/change_form.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:version_id>/publish/",
                view(self.publish),
                name="segmentation-tableversion-publish",
            ),
            *super().get_urls(),
        ]

    def publish(self, request, version_id):
        version = self.get_object(request, str(version_id))
        if request.method != "POST" or version is None or not is_editor(request):
            raise PermissionDenied
        try:
            table_publish(version=version)
        except PublishError as error:
            self.message_user(request, f"Not published: {error}.", messages.ERROR)
        else:
            pinned = (
                " It is pinned: automatic builds now wait as previews." if version.is_pinned else ""
            )
            self.message_user(
                request, f"Version {version.number} of {version.campaign} serves now.{pinned}"
            )
        return HttpResponseRedirect(
            reverse("admin:segmentation_tableversion_change", args=[version.pk])
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = self.get_object(request, object_id)
        can_publish = (
            version is not None
            and is_editor(request)
            and version.is_stored
            and version.status in (TableVersion.Status.READY, TableVersion.Status.SUPERSEDED)
        )
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "can_publish": can_publish}
        )

    @admin.display(description="Build time")
    def duration(self, version):
        seconds = version.duration_seconds
        return "-" if seconds is None else f"{seconds * 1000:.0f} ms"

    @admin.display(description="Changes")
    def changes(self, version):
        if version.diff_against is None:
            return "-"
        moved = sum(move["visitors"] for move in version.diff)
        return f"{moved:,} visitors move (against v{version.diff_against})"

    @admin.display(description="Who moves, against the version serving when it was built")
    def moves(self, version):
        if version.diff_against is None:
            return "Nothing served before this version."
        if not version.diff:
            return f"Nobody moves against version {version.diff_against}."
        return format_html_join(
            "",
            "<p>{} visitors move from {} to {}</p>",
            ((f"{move['visitors']:,}", move["from"], move["to"]) for move in version.diff),
        )

    @admin.display(description="Visitors in several segments: who wins")
    def conflicts(self, version):
        if not version.overlaps:
            return "No visitor is in more than one attached segment."
        return format_html_join(
            "",
            "<p>{} visitors are in both; <strong>{}</strong> wins over {}</p>",
            ((f"{row['visitors']:,}", row["winner"], row["other"]) for row in version.overlaps),
        )

    @admin.display(description="Visitors per content")
    def per_content(self, version):
        return _lines(f"{name}: {count:,}" for name, count in version.content_counts.items())

    @admin.display(description="Visitors per segment (seconds to evaluate)")
    def per_segment(self, version):
        return _lines(
            f"{name}: {count:,} ({version.segment_seconds.get(name, 0):.3f} s)"
            for name, count in version.segment_counts.items()
        )


def _lines(lines) -> str:
    return format_html_join("", "<p>{}</p>", ((line,) for line in lines)) or "-"
