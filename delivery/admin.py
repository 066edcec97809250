from django.contrib import admin

from coremetrics.tenancy import ReadOnlyTenantAdmin
from delivery.models import Visitor


@admin.register(Visitor)
class VisitorAdmin(ReadOnlyTenantAdmin):
    list_display = ["visitor_id", "first_seen_at", "last_seen_at", "client"]
    search_fields = ["visitor_id"]
    readonly_fields = [field.name for field in Visitor._meta.fields]
