"""The email campaigns API (/api/v1): campaigns (sending, test sends, schedules, results),
their mailings and messages, and suppressed addresses (docs/email.md)."""

from __future__ import annotations

import smtplib
from datetime import datetime

from anymail.exceptions import AnymailError
from django.db import models
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, filters, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from campaigns.api.statistics import ComparisonSerializer, SampleSerializer
from campaigns.models import (
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
)
from campaigns.services.email_tracking import suppression_add
from coremetrics.api import (
    TenantModelSerializer,
    TenantReadOnlyViewSet,
    TenantViewSet,
    writing_client,
)


class EmailScheduleSerializer(serializers.Serializer):
    """The campaign's entry in the beat schedule (also under Periodic tasks in the console)."""

    enabled = serializers.BooleanField(read_only=True)
    once_at = serializers.DateTimeField(
        source="clocked.clocked_time", allow_null=True, read_only=True, help_text="Sent once."
    )
    crontab = serializers.CharField(
        allow_null=True, read_only=True, help_text="Sent again and again, at these times."
    )
    last_run_at = serializers.DateTimeField(allow_null=True, read_only=True)


class EmailCampaignSerializer(TenantModelSerializer):
    schedule = EmailScheduleSerializer(read_only=True, allow_null=True)

    class Meta:
        model = EmailCampaign
        fields = [
            "id", "name", "status", "segments", "excluded_segments", "from_email", "reply_to",
            "subject", "subject_b", "subject_b_share", "html_body", "text_body", "holdout_share",
            "attribution_days", "rate_per_minute", "schedule", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]


class EmailMailingSerializer(TenantModelSerializer):
    class Meta:
        model = EmailMailing
        fields = [
            "id", "campaign", "occurrence", "status", "recipients", "started_at", "finished_at"
        ]  # fmt: skip
        read_only_fields = fields


class TestSendRequest(serializers.Serializer):
    addresses = serializers.ListField(
        child=serializers.EmailField(), min_length=1, max_length=TEST_ADDRESSES_MAX
    )


class ScheduleRequest(serializers.Serializer):
    at = serializers.DateTimeField(help_text="The (first) sending.")
    repeat = serializers.ChoiceField(
        choices=["", "daily", "weekly"],
        default="",
        help_text='"": once; "daily" or "weekly": from then on at that time.',
    )

    def validate_at(self, value: datetime) -> datetime:
        if not 2000 <= value.year <= 2099:
            raise serializers.ValidationError("must be within 2000-2099")
        return value


class ResultsQuery(serializers.Serializer):
    mailing = serializers.IntegerField(
        required=False, min_value=1, help_text="One mailing's results (default: all of them)."
    )


class EmailTotalsSerializer(serializers.Serializer):
    recipients = serializers.IntegerField(help_text="Mailed and held out.")
    held_out = serializers.IntegerField()
    waiting = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    bounced = serializers.IntegerField()
    failed = serializers.IntegerField()
    interrupted = serializers.IntegerField()
    opened_raw = serializers.IntegerField(help_text="Every recorded open, machines' included.")
    opened_human = serializers.IntegerField()
    clicked_raw = serializers.IntegerField()
    clicked_human = serializers.IntegerField()
    unsubscribed = serializers.IntegerField()
    purchases = serializers.IntegerField(help_text="Attributed to a person's click.")
    revenue = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=False)


class EmailGroupSerializer(EmailTotalsSerializer):
    key = serializers.CharField(help_text="a: the subject; b: the second subject.")
    subject = serializers.CharField()


class MachineReasonSerializer(serializers.Serializer):
    reason = serializers.CharField()
    count = serializers.IntegerField()


class HoldoutSerializer(serializers.Serializer):
    mailed = SampleSerializer()
    held_out = SampleSerializer()
    conversion = ComparisonSerializer(allow_null=True)
    revenue = ComparisonSerializer(allow_null=True)


class EmailResultsSerializer(serializers.Serializer):
    attribution_days = serializers.IntegerField()
    totals = EmailTotalsSerializer()
    groups = EmailGroupSerializer(many=True)
    machine_reasons = MachineReasonSerializer(
        many=True, help_text="Opens and clicks set aside as a machine's, by rule."
    )
    holdout = HoldoutSerializer(allow_null=True, help_text="Null without a holdout.")


class EmailCampaignViewSet(TenantViewSet):
    """Email campaigns (docs/email.md): templates checked when saved; send now, a test send,
    a schedule, and the results of the mailings."""

    queryset = (
        EmailCampaign.objects.select_related("schedule__clocked", "schedule__crontab")
        .prefetch_related("segments", "excluded_segments")
        .order_by("name")
    )

    def instance_delete(self, instance: models.Model) -> None:
        assert isinstance(instance, EmailCampaign)
        email_campaign_delete(campaign=instance)

    serializer_class = EmailCampaignSerializer
    filterset_fields = ["status", "name"]
    ordering_fields = ["name", "created_at"]

    @extend_schema(request=None, responses={201: EmailMailingSerializer})
    @action(detail=True, methods=["post"])
    def send(self, request: Request, pk: str | None = None) -> Response:
        """Start a mailing now (an active campaign, to its segments); follow it in
        /api/v1/email-mailings and /api/v1/email-messages."""
        campaign = self.get_object()
        writing_client(request)
        try:
            mailing = email_campaign_send(campaign=campaign)
        except EmailError as error:
            raise exceptions.ValidationError({"detail": str(error)}) from None
        return Response(EmailMailingSerializer(mailing).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=TestSendRequest,
        responses={
            200: inline_serializer("TestSent", {"sent": serializers.IntegerField()}),
            503: OpenApiResponse(
                inline_serializer("MailServerUnavailable", {"detail": serializers.CharField()}),
                description="The mail server cannot take the messages now.",
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="test-send")
    def test_send(self, request: Request, pk: str | None = None) -> Response:
        """Send the campaign as a test ("[Test]" subject, links not tracked) to these
        addresses, with the profile of each address when there is one."""
        campaign = self.get_object()
        writing_client(request)
        body = TestSendRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            sent = email_test_send(campaign=campaign, addresses=body.validated_data["addresses"])
        except EmailError as error:
            # The templates render for the sample recipient, not necessarily for every profile.
            raise exceptions.ValidationError({"detail": str(error)}) from None
        except (OSError, smtplib.SMTPException, AnymailError) as error:
            return Response(
                {"detail": f"the mail server did not take the messages ({error}); retry later"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"sent": sent})

    @extend_schema(request=ScheduleRequest, responses={200: EmailCampaignSerializer})
    @action(detail=True, methods=["post"])
    def schedule(self, request: Request, pk: str | None = None) -> Response:
        """Put the campaign in the beat schedule, replacing its schedule if it had one."""
        campaign = self.get_object()
        writing_client(request)
        body = ScheduleRequest(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            email_campaign_schedule(campaign=campaign, **body.validated_data)
        except EmailError as error:
            raise exceptions.ValidationError({"detail": str(error)}) from None
        return Response(self.get_serializer(campaign).data)

    @extend_schema(request=None, responses={204: None})
    @schedule.mapping.delete
    def unschedule(self, request: Request, pk: str | None = None) -> Response:
        """Take the campaign out of the beat schedule (nothing changes if it was not in it)."""
        campaign = self.get_object()
        writing_client(request)
        email_campaign_unschedule(campaign=campaign)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[ResultsQuery], responses={200: EmailResultsSerializer})
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk: str | None = None) -> Response:
        """What the mailings did: delivery, opens and clicks (people's apart from machines'),
        unsubscribes, attributed purchases, per subject, and the lift against the holdout."""
        campaign = self.get_object()
        query = ResultsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        mailing_id = query.validated_data.get("mailing")
        if mailing_id is not None and not campaign.mailings.filter(pk=mailing_id).exists():
            raise exceptions.ValidationError({"mailing": ["no mailing of this campaign"]})
        results = email_campaign_results(campaign=campaign, mailing_id=mailing_id)
        reasons = [
            {"reason": reason, "count": count} for reason, count in results["machine_reasons"]
        ]
        return Response(EmailResultsSerializer({**results, "machine_reasons": reasons}).data)


class EmailMailingViewSet(TenantReadOnlyViewSet):
    """Every sending of an email campaign; its messages are in /api/v1/email-messages."""

    queryset = EmailMailing.objects.order_by("-occurrence")
    serializer_class = EmailMailingSerializer
    filterset_fields = ["campaign", "status"]
    ordering_fields = ["occurrence"]


class EmailMessageSerializer(TenantModelSerializer):
    class Meta:
        model = EmailMessage
        fields = [
            "id", "mailing", "campaign", "visitor_id", "email", "group", "status", "message_id",
            "error", "sent_at", "unsubscribed_at",
        ]  # fmt: skip
        read_only_fields = fields


class EmailMessageViewSet(TenantReadOnlyViewSet):
    """One recipient of a mailing each: what was sent to them, or their place in the holdout."""

    queryset = EmailMessage.objects.order_by("id")
    serializer_class = EmailMessageSerializer
    filter_backends = [*api_settings.DEFAULT_FILTER_BACKENDS, filters.SearchFilter]
    filterset_fields = ["mailing", "campaign", "status", "group"]
    search_fields = ["email"]
    ordering_fields = ["id", "sent_at"]


class EmailSuppressionSerializer(TenantModelSerializer):
    reason = serializers.ChoiceField(
        choices=EmailSuppression.Reason.choices, default=EmailSuppression.Reason.MANUAL
    )

    class Meta:
        model = EmailSuppression
        fields = ["id", "email", "reason", "message", "created_at"]
        read_only_fields = ["message", "created_at"]

    def validate_email(self, value: str) -> str:
        return value.lower()  # so that the per-client uniqueness check sees what is stored


class EmailSuppressionViewSet(TenantViewSet):
    """Addresses never mailed again: unsubscribed, bounced, complained, or added here. Deleting
    one lets the address be mailed again."""

    queryset = EmailSuppression.objects.order_by("-created_at", "-id")
    serializer_class = EmailSuppressionSerializer
    filterset_fields = ["email", "reason"]
    ordering_fields = ["created_at", "email"]
    http_method_names = ["get", "post", "delete", "head", "options"]

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = suppression_add(
            client_id=writing_client(self.request).pk, **serializer.validated_data
        )
