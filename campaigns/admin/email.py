"""The console's email campaigns (C2, B3, B4): the campaign with its templates and segments,
sending now, a test send, the schedule, results; mailings, messages and suppressions."""

from __future__ import annotations

import smtplib

from anymail.exceptions import AnymailError
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.validators import validate_email
from django.db.models import Max
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from campaigns.models import (
    EmailActivity,
    EmailCampaign,
    EmailMailing,
    EmailMessage,
    EmailSuppression,
)
from campaigns.selectors import email_campaign_results
from campaigns.services.email import (
    TEST_ADDRESSES_MAX,
    EmailError,
    email_campaign_delete,
    email_campaign_schedule,
    email_campaign_send,
    email_campaign_unschedule,
    email_test_send,
    recipients_matching,
)
from campaigns.statistics import lift_text
from coremetrics.tenancy import ReadOnlyTenantAdmin, TenantAdmin, TenantForm


class TestSendForm(forms.Form):
    addresses = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=f"Up to {TEST_ADDRESSES_MAX} addresses, one a line or separated by commas.",
    )

    def clean_addresses(self) -> list[str]:
        addresses = [
            part.strip()
            for part in self.cleaned_data["addresses"].replace(",", "\n").splitlines()
            if part.strip()
        ]
        if not 0 < len(addresses) <= TEST_ADDRESSES_MAX:
            raise forms.ValidationError(f"Give 1 to {TEST_ADDRESSES_MAX} addresses.")
        for address in addresses:
            validate_email(address)
        return addresses


class ScheduleForm(forms.Form):
    at = forms.DateTimeField(
        label="First sending", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    repeat = forms.ChoiceField(
        choices=[("", "Once"), ("daily", "Every day at that time"), ("weekly", "Every week")],
        required=False,
    )


@admin.register(EmailCampaign)
class EmailCampaignAdmin(TenantAdmin):
    list_display = ["name", "status", "schedule_text", "last_sent", "client"]
    list_filter = ["status"]
    search_fields = ["name", "subject"]
    filter_horizontal = ["segments", "excluded_segments"]
    fieldsets = [
        (None, {"fields": ["name", "status", "segments", "excluded_segments"]}),
        ("Message", {"fields": ["from_email", "reply_to", "subject", "html_body", "text_body"]}),
        (
            "Measuring",
            {"fields": ["subject_b", "subject_b_share", "holdout_share", "attribution_days"]},
        ),
        ("Sending", {"fields": ["rate_per_minute"]}),
    ]
    change_form_template = "admin/campaigns/emailcampaign/change_form.html"

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if not request.user.is_superuser:
            return fieldsets
        (name, options), *rest = fieldsets
        return [(name, {"fields": ["client", *options["fields"]]}), *rest]

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:campaign_id>/send/", view(self.send), name="campaigns-emailcampaign-send"),
            path("<int:campaign_id>/test/", view(self.test), name="campaigns-emailcampaign-test"),
            path(
                "<int:campaign_id>/schedule/",
                view(self.schedule_view),
                name="campaigns-emailcampaign-schedule",
            ),
            path(
                "<int:campaign_id>/results/",
                view(self.results),
                name="campaigns-emailcampaign-results",
            ),
            *super().get_urls(),
        ]

    def delete_model(self, request, obj):
        email_campaign_delete(campaign=obj)

    def delete_queryset(self, request, queryset):
        for campaign in queryset:
            email_campaign_delete(campaign=campaign)

    @admin.display(description="Schedule")
    def schedule_text(self, campaign: EmailCampaign) -> str:
        task = campaign.schedule
        if task is None:
            return "-"
        if task.clocked is not None:
            return f"once, {timezone.localtime(task.clocked.clocked_time):%Y-%m-%d %H:%M}"
        return str(task.crontab)

    def get_queryset(self, request):
        queryset = super().get_queryset(request).select_related("schedule__clocked")
        return queryset.select_related("schedule__crontab").annotate(
            last_occurrence=Max("mailings__occurrence")
        )

    @admin.display(description="Last mailing", ordering="last_occurrence")
    def last_sent(self, campaign: EmailCampaign) -> str:
        last = getattr(campaign, "last_occurrence", None)
        return "-" if last is None else f"{timezone.localtime(last):%Y-%m-%d %H:%M}"

    def _campaign(self, request, campaign_id: int, *, change: bool) -> EmailCampaign:
        campaign = self.get_object(request, str(campaign_id))
        if campaign is None or (change and not self.has_change_permission(request, campaign)):
            raise PermissionDenied
        return campaign

    def _back(self, campaign: EmailCampaign) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:campaigns_emailcampaign_change", args=[campaign.pk])
        )

    def send(self, request, campaign_id: int):
        campaign = self._campaign(request, campaign_id, change=True)
        if request.method != "POST":
            return self._form_page(request, campaign, None, "Send now", "Send now")
        try:
            email_campaign_send(campaign=campaign)
        except EmailError as error:
            self.message_user(request, f"Not sent: {error}.", messages.ERROR)
        else:
            self.message_user(
                request, "Sending has started: the worker is choosing the recipients."
            )
        return self._back(campaign)

    def test(self, request, campaign_id: int):
        campaign = self._campaign(request, campaign_id, change=True)
        form = TestSendForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                sent = email_test_send(campaign=campaign, addresses=form.cleaned_data["addresses"])
            except EmailError as error:
                self.message_user(request, f"{error}.", messages.ERROR)
            except (OSError, smtplib.SMTPException, AnymailError) as error:
                self.message_user(request, f"Not sent: {error}", messages.ERROR)
            else:
                self.message_user(request, f"{sent} test message(s) sent.")
                return self._back(campaign)
        return self._form_page(request, campaign, form, "Send a test", "Send the test")

    def schedule_view(self, request, campaign_id: int):
        campaign = self._campaign(request, campaign_id, change=True)
        if request.method == "POST" and "unschedule" in request.POST:
            email_campaign_unschedule(campaign=campaign)
            self.message_user(request, "The campaign is no longer scheduled.")
            return self._back(campaign)
        form = ScheduleForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                email_campaign_schedule(
                    campaign=campaign,
                    at=form.cleaned_data["at"],
                    repeat=form.cleaned_data["repeat"],
                )
            except EmailError as error:
                form.add_error(None, str(error))
            else:
                self.message_user(request, "Scheduled; the entry is under Periodic tasks too.")
                return self._back(campaign)
        return self._form_page(request, campaign, form, "Schedule", "Schedule")

    def _form_page(self, request, campaign, form, title, submit_label):
        context = {
            "submit_label": submit_label,
            "audience": 0 if form else _audience(campaign),
            **self.admin_site.each_context(request),
            "title": f"{title}: {campaign}",
            "opts": self.model._meta,
            "original": campaign,
            "form": form,
            "is_scheduled": campaign.schedule_id is not None,
            "schedule_text": self.schedule_text(campaign),
        }
        return TemplateResponse(request, "admin/campaigns/emailcampaign/form.html", context)

    def results(self, request, campaign_id: int):
        campaign = self._campaign(request, campaign_id, change=False)
        mailing_id = request.GET.get("mailing")
        mailing = (
            campaign.mailings.filter(pk=mailing_id).first()
            if mailing_id and mailing_id.isdigit()
            else None
        )
        results = email_campaign_results(
            campaign=campaign, mailing_id=mailing.pk if mailing else None
        )
        results["totals"] = _with_rates(results["totals"])
        results["groups"] = [_with_rates(group) for group in results["groups"]]
        holdout = results["holdout"]
        if holdout:
            holdout["conversion_text"] = lift_text(holdout["conversion"])
            holdout["revenue_text"] = lift_text(holdout["revenue"])
        context = {
            **self.admin_site.each_context(request),
            "title": f"Results of {campaign}",
            "opts": self.model._meta,
            "original": campaign,
            "mailing": mailing,
            "mailings": campaign.mailings.all()[:50],
            "results": results,
            "audience": _audience(campaign),
        }
        return TemplateResponse(request, "admin/campaigns/emailcampaign/results.html", context)


def _audience(campaign: EmailCampaign) -> int:
    if not campaign.segments.exists():
        return 0
    return recipients_matching(campaign=campaign).values("address").distinct().count()


RATES = ["opened_raw", "opened_human", "clicked_raw", "clicked_human", "unsubscribed"]


def _with_rates(row: dict) -> dict:
    """Each engagement figure as a percentage of the messages delivered."""
    delivered = row["delivered"]
    return row | {
        "opened_machine": row["opened_raw"] - row["opened_human"],
        "clicked_machine": row["clicked_raw"] - row["clicked_human"],
        **{f"{name}_percent": 100 * row[name] / delivered if delivered else None for name in RATES},
    }


@admin.register(EmailMailing)
class EmailMailingAdmin(ReadOnlyTenantAdmin):
    list_display = ["campaign", "occurrence", "status", "recipients", "finished_at", "client"]
    list_filter = ["status"]
    list_select_related = ["campaign"]


@admin.register(EmailMessage)
class EmailMessageAdmin(ReadOnlyTenantAdmin):
    list_display = ["email", "campaign", "group", "status", "sent_at", "unsubscribed_at", "client"]
    list_filter = ["status", "group"]
    search_fields = ["email", "visitor_id"]
    list_select_related = ["campaign"]


@admin.register(EmailActivity)
class EmailActivityAdmin(ReadOnlyTenantAdmin):
    list_display = ["kind", "message", "at", "user_agent", "ip", "is_decoy", "client"]
    list_filter = ["kind", "is_decoy"]
    list_select_related = ["message"]


class SuppressionForm(TenantForm):
    def clean_email(self) -> str:
        # Stored lower-cased: the unique check must see the address as it will be stored.
        return self.cleaned_data["email"].lower()


@admin.register(EmailSuppression)
class EmailSuppressionAdmin(TenantAdmin):
    """Addresses the client never mails: unsubscribed, bounced, complained, or added by hand."""

    form = SuppressionForm
    list_display = ["email", "reason", "created_at", "client"]
    list_filter = ["reason"]
    search_fields = ["email"]
    exclude = ["message"]
