from datetime import date, timedelta
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    ContentChange,
    Experiment,
    ExperimentGroup,
    Placement,
)
from campaigns.selectors import campaign_report
from campaigns.services import (
    ExperimentError,
    content_approve,
    content_delete,
    content_save,
    experiment_end,
    experiment_reallocate,
    experiment_results,
    experiment_start,
)
from campaigns.statistics import lift_text
from coremetrics.tenancy import (
    ReadOnlyTenantAdmin,
    TenantAdmin,
    TenantInline,
    client_of,
    is_client_admin,
)
from segmentation.services import visitor_explain


@admin.register(Content)
class ContentAdmin(TenantAdmin):
    """Script and HTML content waits for a client admin's approval; every change to it is in
    the audit log (Content changes)."""

    rebuilds_tables = True
    list_display = ["name", "type", "url", "click_url", "is_approved", "client"]
    list_filter = ["type", "is_approved"]
    search_fields = ["name", "url"]
    readonly_fields = ["is_approved"]
    actions = ["approve"]

    def save_model(self, request, obj, form, change):
        if not request.user.is_superuser:
            obj.client = client_of(request)
        content_save(content=obj, by=request.user.get_username(), is_admin=is_client_admin(request))
        self._tables_rebuild([obj.client_id])

    def delete_model(self, request, obj):
        content_delete(content=obj, by=request.user.get_username())
        self._tables_rebuild([obj.client_id])

    def delete_queryset(self, request, queryset):
        client_ids = list(queryset.values_list("client_id", flat=True).distinct())
        for content in queryset:
            content_delete(content=content, by=request.user.get_username())
        self._tables_rebuild(client_ids)

    @admin.action(
        description="Approve the selected script and HTML content", permissions=["approve"]
    )
    def approve(self, request, queryset):
        approved = sum(
            content_approve(content=content, by=request.user.get_username()) for content in queryset
        )
        self._tables_rebuild(list(queryset.values_list("client_id", flat=True).distinct()))
        self.message_user(request, f"{approved} approved; the tables are being rebuilt.")

    def has_approve_permission(self, request) -> bool:
        return is_client_admin(request)


@admin.register(ContentChange)
class ContentChangeAdmin(ReadOnlyTenantAdmin):
    """The audit log of script and HTML content (who, what, the code before and after)."""

    list_display = ["at", "content_name", "action", "by", "is_approved", "client"]
    list_filter = ["action", "is_approved"]
    search_fields = ["content_name", "by"]


@admin.register(Placement)
class PlacementAdmin(TenantAdmin):
    rebuilds_tables = True
    list_display = ["key", "name", "client"]
    search_fields = ["key", "name"]


class ConditionsField(forms.JSONField):
    """Request-time conditions: left empty, none (not null)."""

    def to_python(self, value):
        converted = super().to_python(value)
        return {} if converted is None else converted


CONDITIONS_FIELD: dict[type[models.Field], dict[str, Any]] = {
    models.JSONField: {"form_class": ConditionsField, "widget": forms.Textarea(attrs={"rows": 2})}
}


class AttachmentInline(TenantInline):
    model = Attachment
    fields = ["priority", "segment", "content", "conditions"]
    extra = 0
    formfield_overrides = CONDITIONS_FIELD


@admin.register(Campaign)
class CampaignAdmin(TenantAdmin):
    rebuilds_tables = True
    list_display = ["name", "key", "placement", "default_content", "is_active", "client"]
    list_filter = ["is_active"]
    search_fields = ["name", "key"]
    inlines = [AttachmentInline]
    actions = ["build_tables_now", "build_previews"]
    change_form_template = "admin/campaigns/campaign/change_form.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:campaign_id>/explain/", view(self.explain), name="campaigns-campaign-explain"
            ),
            path("<int:campaign_id>/report/", view(self.report), name="campaigns-campaign-report"),
            *super().get_urls(),
        ]

    def explain(self, request, campaign_id):
        """Why did visitor X get content Y in this campaign (B1)."""
        campaign = self.get_object(request, str(campaign_id))
        if campaign is None or not self.has_view_permission(request, campaign):
            raise PermissionDenied
        visitor_id = request.GET.get("visitor", "").strip()[:64]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Why a visitor gets what they get in {campaign}",
            "opts": self.model._meta,
            "original": campaign,
            "visitor_id": visitor_id,
            "explanation": visitor_explain(
                campaign_id=campaign.pk, visitor_id=visitor_id, client_id=campaign.client_id
            )
            if visitor_id
            else None,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/explain.html", context)

    def report(self, request, campaign_id):
        """How the campaign did over a period (C3): per content and segment, day by day."""
        campaign = self.get_object(request, str(campaign_id))
        if campaign is None or not self.has_view_permission(request, campaign):
            raise PermissionDenied
        today = timezone.now().date()
        last = _date(request.GET.get("last")) or today
        first = _date(request.GET.get("first")) or last - timedelta(days=29)
        report = None
        if first <= last and (last - first).days < 366:
            report = campaign_report(campaign=campaign, first=first, last=last)
            busiest = max((day["impressions"] for day in report["daily"]), default=0) or 1
            for day in report["daily"]:
                day["height"] = round(100 * day["impressions"] / busiest)
            top = max((row["impressions"] for row in report["contents"]), default=0) or 1
            for row in report["contents"]:
                row["width"] = round(100 * row["impressions"] / top)
                for name in ("click_through_rate", "conversion_rate"):
                    rate = row[name]
                    row[f"{name}_percent"] = None if rate is None else 100 * rate
        context = {
            **self.admin_site.each_context(request),
            "title": f"How {campaign} did",
            "opts": self.model._meta,
            "original": campaign,
            "report": report,
            "first": first,
            "last": last,
            "experiments": Experiment.objects.filter(attachment__campaign=campaign).exclude(
                status=Experiment.Status.DRAFT
            ),
        }
        return TemplateResponse(request, "admin/campaigns/campaign/report.html", context)

    @admin.action(
        description="Build previews of the lookup tables (publish them by hand)",
        permissions=["change"],
    )
    def build_previews(self, request, queryset):
        from segmentation.tasks import build_table

        campaign_ids = list(queryset.values_list("pk", flat=True))
        for campaign_id in campaign_ids:
            transaction.on_commit(partial(build_table.delay, campaign_id, publish=False))
        self.message_user(
            request,
            f"Queued {len(campaign_ids)} preview build(s); each shows who moves in Table "
            "versions, with a Publish button.",
            messages.SUCCESS,
        )

    @admin.action(description="Build and publish the lookup tables now", permissions=["change"])
    def build_tables_now(self, request, queryset):
        from segmentation.tasks import build_table

        campaign_ids = list(queryset.values_list("pk", flat=True))
        for campaign_id in campaign_ids:
            transaction.on_commit(partial(build_table.delay, campaign_id))
        self.message_user(
            request,
            f"Queued table builds for {len(campaign_ids)} campaign(s); see Table versions.",
            messages.SUCCESS,
        )


@admin.register(Attachment)
class AttachmentAdmin(TenantAdmin):
    rebuilds_tables = True
    list_display = ["campaign", "priority", "segment", "content", "conditions", "client"]
    formfield_overrides = {**TenantAdmin.formfield_overrides, **CONDITIONS_FIELD}
    list_filter = ["campaign"]


class ExperimentGroupInline(TenantInline):
    model = ExperimentGroup
    fields = ["key", "name", "is_control", "share", "shows", "content"]
    extra = 0


@admin.register(Experiment)
class ExperimentAdmin(TenantAdmin):
    """A/B tests (C1): groups and shares, start, results, end with a winner."""

    rebuilds_tables = True
    list_display = ["name", "attachment", "status", "holdout_share", "started_at", "client"]
    list_filter = ["status"]
    search_fields = ["name"]
    fields = ["name", "attachment", "holdout_share", "minimum_days", "status", "started_at",
              "ended_at", "winner", "salt"]  # fmt: skip
    readonly_fields = ["status", "started_at", "ended_at", "winner", "salt"]
    inlines = [ExperimentGroupInline]
    actions = ["start"]
    change_form_template = "admin/campaigns/experiment/change_form.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:experiment_id>/results/",
                view(self.results),
                name="campaigns-experiment-results",
            ),
            path("<int:experiment_id>/end/", view(self.end), name="campaigns-experiment-end"),
            *super().get_urls(),
        ]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        experiment = form.instance
        if experiment.status == Experiment.Status.RUNNING:
            try:
                moved = experiment_reallocate(experiment=experiment)
            except ExperimentError as error:
                self.message_user(request, f"Shares not applied: {error}.", messages.ERROR)
            else:
                self.message_user(request, f"{moved} of 10,000 buckets changed group.")

    @admin.action(description="Start the selected tests", permissions=["change"])
    def start(self, request, queryset):
        for experiment in queryset:
            try:
                experiment_start(experiment=experiment)
            except ExperimentError as error:
                self.message_user(request, f"{experiment} not started: {error}.", messages.ERROR)
            else:
                self.message_user(request, f"{experiment} runs from the next table build.")
        self._tables_rebuild({experiment.client_id for experiment in queryset})

    def results(self, request, experiment_id):
        experiment = self.get_object(request, str(experiment_id))
        if experiment is None:
            raise PermissionDenied
        today = timezone.now().date()
        started = experiment.started_at.date() if experiment.started_at else today
        first = _date(request.GET.get("first")) or started
        last = _date(request.GET.get("last")) or today
        results = (
            experiment_results(experiment=experiment, first=first, last=last)
            if first <= last
            else None
        )
        if results and results["holdout"]:
            holdout = results["holdout"]
            holdout["campaign_conversion_text"] = lift_text(holdout["campaign_conversion"])
            holdout["campaign_revenue_text"] = lift_text(holdout["campaign_revenue"])
        for row in results["groups"] if results else []:
            rate = row["conversion_rate"]
            row["conversion_percent"] = None if rate is None else 100 * rate
            ctr = row["click_through_rate"]
            row["ctr_percent"] = None if ctr is None else 100 * ctr
            row["conversion_lift"] = lift_text(row["conversion"])
            row["revenue_lift_text"] = lift_text(row["revenue_lift"])
        context = {
            **self.admin_site.each_context(request),
            "title": f"Results of {experiment}",
            "opts": self.model._meta,
            "original": experiment,
            "results": results,
            "can_end": experiment.status == Experiment.Status.RUNNING
            and self.has_change_permission(request, experiment),
        }
        return TemplateResponse(request, "admin/campaigns/experiment/results.html", context)

    def end(self, request, experiment_id):
        experiment = self.get_object(request, str(experiment_id))
        if (
            request.method != "POST"
            or experiment is None
            or not self.has_change_permission(request, experiment)
        ):
            raise PermissionDenied
        winner = experiment.groups.filter(key=request.POST.get("winner", "")).first()
        try:
            if winner is None:
                raise ExperimentError("choose the winning group")
            experiment_end(experiment=experiment, winner=winner)
        except ExperimentError as error:
            self.message_user(request, f"Not ended: {error}.", messages.ERROR)
        else:
            self.message_user(
                request, f"{winner.name} won: the segment sees it from the next table build."
            )
            self._tables_rebuild({experiment.client_id})
        return HttpResponseRedirect(
            reverse("admin:campaigns-experiment-results", args=[experiment.pk])
        )


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


# The email campaigns register themselves (a module of their own: campaigns/admin/email.py).
from campaigns.admin import email as email_admin  # noqa: E402, F401
