from functools import partial

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import path

from campaigns.models import Attachment, Campaign, Content, Placement
from coremetrics.tenancy import TenantAdmin, TenantInline
from segmentation.services import visitor_explain


@admin.register(Content)
class ContentAdmin(TenantAdmin):
    rebuilds_tables = True
    list_display = ["name", "type", "url", "click_url", "client"]
    list_filter = ["type"]
    search_fields = ["name", "url"]


@admin.register(Placement)
class PlacementAdmin(TenantAdmin):
    rebuilds_tables = True
    list_display = ["key", "name", "client"]
    search_fields = ["key", "name"]


class AttachmentInline(TenantInline):
    model = Attachment
    fields = ["priority", "segment", "content"]
    extra = 0


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
            "explanation": visitor_explain(campaign_id=campaign.pk, visitor_id=visitor_id)
            if visitor_id
            else None,
        }
        return TemplateResponse(request, "admin/campaigns/campaign/explain.html", context)

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
    list_display = ["campaign", "priority", "segment", "content", "client"]
    list_filter = ["campaign"]
