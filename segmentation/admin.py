from django import forms
from django.contrib import admin

from coremetrics.tenancy import ReadOnlyTenantAdmin, TenantAdmin, TenantForm
from segmentation.models import Segment, TableVersion
from segmentation.rules import RuleError, rule_validate
from segmentation.services import segment_audience_count


class SegmentForm(TenantForm):
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
    readonly_fields = ["audience_size"]

    @admin.display(description="Visitors matching now")
    def audience_size(self, obj):
        if obj.pk is None:
            return "-"
        return segment_audience_count(segment=obj)


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
