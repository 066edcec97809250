from functools import partial

from django.contrib import admin, messages
from django.db import transaction

from campaigns.models import Attachment, Campaign, Content, Placement
from coremetrics.tenancy import TenantAdmin, TenantInline


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
    actions = ["build_tables_now"]

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
