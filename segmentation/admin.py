import json

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.urls import path, reverse

from aggregation.selectors import categories_seen
from coremetrics.models import Client
from coremetrics.tenancy import ReadOnlyTenantAdmin, TenantAdmin, TenantForm, client_of
from segmentation.models import Segment, TableVersion
from segmentation.rules import BEHAVIOURS, COUNT_SQL, FIELDS, RuleError, rule_validate
from segmentation.services import segment_audience


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


@admin.register(TableVersion)
class TableVersionAdmin(ReadOnlyTenantAdmin):
    list_display = [
        "campaign",
        "number",
        "status",
        "visitor_count",
        "duration",
        "published_at",
        "client",
    ]
    list_filter = ["status"]
    readonly_fields = [field.name for field in TableVersion._meta.fields]

    @admin.display(description="Build time")
    def duration(self, version):
        seconds = version.duration_seconds
        return "-" if seconds is None else f"{seconds * 1000:.0f} ms"
