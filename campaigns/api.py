"""The campaigns API (/api/v1): placements, content, campaigns and their builds, attachments,
A/B tests and their results; email campaigns (sending, test sends, schedules, results), their
mailings and messages, and suppressed addresses."""

from __future__ import annotations

import smtplib
from datetime import date, datetime, timedelta
from email.utils import parseaddr

from django.core import validators
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail.message import sanitize_address
from django.db import models, transaction
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from jinja2 import TemplateError
from rest_framework import exceptions, filters, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    EmailCampaign,
    EmailMailing,
    EmailMessage,
    EmailSuppression,
    Experiment,
    ExperimentGroup,
    Placement,
)
from campaigns.selectors import email_campaign_results
from campaigns.services import (
    ExperimentError,
    content_delete,
    content_save,
    experiment_end,
    experiment_results,
    experiment_start,
)
from campaigns.services.email import (
    EmailError,
    email_campaign_schedule,
    email_campaign_send,
    email_campaign_unschedule,
    email_test_send,
    suppression_add,
)
from coremetrics.api import (
    TenantModelSerializer,
    TenantReadOnlyViewSet,
    TenantViewSet,
    writing_client,
)
from coremetrics.tokens import ApiToken


class PlacementSerializer(TenantModelSerializer):
    class Meta:
        model = Placement
        fields = ["id", "key", "name"]


class PlacementViewSet(TenantViewSet):
    queryset = Placement.objects.order_by("key")
    serializer_class = PlacementSerializer
    filterset_fields = ["key"]
    ordering_fields = ["key", "name"]


class ContentSerializer(TenantModelSerializer):
    class Meta:
        model = Content
        fields = [
            "id", "name", "type", "url", "click_url", "html", "alt_text", "is_approved",
            "created_at",
        ]  # fmt: skip
        read_only_fields = ["is_approved", "created_at"]

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        kind = attrs.get("type", getattr(self.instance, "type", Content.Type.IMAGE))
        html = attrs.get("html", getattr(self.instance, "html", ""))
        url = attrs.get("url", getattr(self.instance, "url", ""))
        if kind == Content.Type.HTML and not html:
            raise serializers.ValidationError({"html": ["HTML content needs its fragment"]})
        if kind != Content.Type.HTML and not url:
            raise serializers.ValidationError({"url": ["this type of content needs its address"]})
        return attrs


class ContentViewSet(TenantViewSet):
    """Script and HTML content sent through the API waits for a client admin's approval in
    the console; every change to it is in the audit log."""

    queryset = Content.objects.order_by("name")
    serializer_class = ContentSerializer
    filterset_fields = ["type", "name", "is_approved"]
    ordering_fields = ["name", "created_at"]

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        content = Content(**serializer.validated_data, client=writing_client(self.request))
        serializer.instance = content_save(content=content, by=_by(self.request), is_admin=False)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        writing_client(self.request)
        content = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(content, name, value)
        content_save(content=content, by=_by(self.request), is_admin=False)

    def instance_delete(self, instance: models.Model) -> None:
        assert isinstance(instance, Content)
        content_delete(content=instance, by=_by(self.request))


def _by(request: Request) -> str:
    token = request.auth if isinstance(request.auth, ApiToken) else None
    return f"API token {token.name!r}" if token else request.user.get_username()


class CampaignSerializer(TenantModelSerializer):
    class Meta:
        model = Campaign
        fields = [
            "id", "key", "name", "placement", "default_content", "is_active", "cap_views",
            "cap_period", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        placement = attrs.get("placement", getattr(self.instance, "placement", None))
        is_active = attrs.get("is_active", getattr(self.instance, "is_active", True))
        if placement is not None and is_active:
            others = Campaign.objects.filter(placement=placement, is_active=True)
            if self.instance is not None:
                others = others.exclude(pk=self.instance.pk)
            if others.exists():
                raise serializers.ValidationError(
                    {"placement": ["another active campaign shows in this placement"]}
                )
        return attrs


class BuildRequest(serializers.Serializer):
    publish = serializers.BooleanField(
        default=True, help_text="False: build a preview that waits to be published."
    )


class CampaignViewSet(TenantViewSet):
    queryset = Campaign.objects.select_related("placement").order_by("name")
    serializer_class = CampaignSerializer
    filterset_fields = ["key", "is_active", "placement"]
    ordering_fields = ["name", "key", "created_at"]

    @extend_schema(
        request=BuildRequest,
        responses={202: inline_serializer("BuildQueued", {"queued": serializers.BooleanField()})},
    )
    @action(detail=True, methods=["post"])
    def builds(self, request: Request, pk: str | None = None) -> Response:
        """Start a build of the campaign's lookup table (a Celery job); follow it in
        /api/v1/table-versions?campaign=<id>."""
        campaign = self.get_object()
        writing_client(request)
        body = BuildRequest(data=request.data)
        body.is_valid(raise_exception=True)
        from segmentation.tasks import build_table

        publish = body.validated_data["publish"]
        transaction.on_commit(lambda: build_table.delay(campaign.pk, publish))
        return Response({"queued": True}, status=status.HTTP_202_ACCEPTED)


class AttachmentSerializer(TenantModelSerializer):
    class Meta:
        model = Attachment
        fields = ["id", "campaign", "segment", "content", "priority", "conditions"]

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        campaign = attrs.get("campaign", getattr(self.instance, "campaign", None))
        for name in ("segment", "priority"):
            value = attrs.get(name, getattr(self.instance, name, None))
            others = Attachment.objects.filter(campaign=campaign, **{name: value})
            if self.instance is not None:
                others = others.exclude(pk=self.instance.pk)
            if campaign is not None and others.exists():
                raise serializers.ValidationError({name: [f"the campaign has this {name} already"]})
        return attrs


class AttachmentViewSet(TenantViewSet):
    queryset = Attachment.objects.select_related("campaign", "segment", "content")
    serializer_class = AttachmentSerializer
    filterset_fields = ["campaign", "segment", "content"]
    ordering_fields = ["priority"]


class ExperimentGroupSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExperimentGroup
        fields = ["key", "name", "is_control", "share", "shows", "content"]


class ExperimentSerializer(TenantModelSerializer):
    groups = ExperimentGroupSerializer(many=True, read_only=True)

    class Meta:
        model = Experiment
        fields = [
            "id", "name", "attachment", "holdout_share", "minimum_days", "status", "started_at",
            "ended_at", "winner", "groups",
        ]  # fmt: skip
        read_only_fields = ["status", "started_at", "ended_at", "winner"]


class EndRequest(serializers.Serializer):
    winner = serializers.SlugField(help_text="The key of the winning group.")


class ExperimentViewSet(TenantViewSet):
    """A/B tests; their groups are set up in the console (Campaigns → A/B tests)."""

    queryset = Experiment.objects.prefetch_related("groups").order_by("-created_at")
    serializer_class = ExperimentSerializer
    filterset_fields = ["status", "attachment"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    @extend_schema(request=None, responses={200: ExperimentSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        writing_client(request)
        try:
            with transaction.atomic():
                experiment = experiment_start(experiment=experiment)
        except ExperimentError as error:
            raise exceptions.ValidationError({"detail": str(error)}) from None
        return Response(self.get_serializer(experiment).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("first", date, description="First day (default: 30 days ago)"),
            OpenApiParameter("last", date, description="Last day (default: today)"),
        ],
        responses={
            200: inline_serializer("ExperimentResults", {"groups": serializers.ListField()})
        },
    )
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        period = Period(data=request.query_params)
        period.is_valid(raise_exception=True)
        today = timezone.localdate()
        first = period.validated_data.get("first") or today - timedelta(days=29)
        last = period.validated_data.get("last") or today
        return Response(experiment_results(experiment=experiment, first=first, last=last))

    @extend_schema(request=EndRequest, responses={200: ExperimentSerializer})
    @action(detail=True, methods=["post"])
    def end(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        writing_client(request)
        body = EndRequest(data=request.data)
        body.is_valid(raise_exception=True)
        winner = experiment.groups.filter(key=body.validated_data["winner"]).first()
        if winner is None:
            raise exceptions.ValidationError({"winner": ["no group of this test has this key"]})
        try:
            experiment = experiment_end(experiment=experiment, winner=winner)
        except ExperimentError as error:
            raise exceptions.ValidationError({"detail": str(error)}) from None
        return Response(self.get_serializer(experiment).data)


class Period(serializers.Serializer):
    first = serializers.DateField(required=False)
    last = serializers.DateField(required=False)

    def validate(self, attrs: dict) -> dict:
        first, last = attrs.get("first"), attrs.get("last")
        if first and last and (last < first or (last - first).days > 366):
            raise serializers.ValidationError("first..last must be a period of up to 366 days")
        if (first and first.year < 2000) or (last and last.year > 2099):
            raise serializers.ValidationError("dates must be within 2000-2099")
        return attrs


# A test send goes out at once, in the request: a handful of messages.
MAX_TEST_ADDRESSES = 10


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

    def validate_from_email(self, value: str) -> str:
        # The model takes any text; a sender the mail library refuses would fail every message.
        try:
            sanitize_address(value, "utf-8")
            validators.validate_email(parseaddr(value)[1])
            is_valid = "\n" not in value and "\r" not in value
        except (ValueError, DjangoValidationError):
            is_valid = False
        if not is_valid:
            raise serializers.ValidationError(
                "an address, or a name with the address in angle brackets"
            )
        return value


class EmailMailingSerializer(TenantModelSerializer):
    class Meta:
        model = EmailMailing
        fields = [
            "id", "campaign", "occurrence", "status", "recipients", "started_at", "finished_at"
        ]  # fmt: skip
        read_only_fields = fields


class TestSendRequest(serializers.Serializer):
    addresses = serializers.ListField(
        child=serializers.EmailField(), min_length=1, max_length=MAX_TEST_ADDRESSES
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


class SampleSerializer(serializers.Serializer):
    visitors = serializers.IntegerField()
    conversions = serializers.IntegerField()
    conversion_rate = serializers.FloatField(allow_null=True)
    revenue_per_visitor = serializers.FloatField(allow_null=True)


class ComparisonSerializer(serializers.Serializer):
    """Mailed against held out: the difference with its confidence interval, relative to the
    holdout's value as the lift (null when that is 0)."""

    difference = serializers.FloatField()
    low = serializers.FloatField()
    high = serializers.FloatField()
    p_value = serializers.FloatField()
    lift = serializers.FloatField(allow_null=True)
    lift_low = serializers.FloatField(allow_null=True)
    lift_high = serializers.FloatField(allow_null=True)
    is_significant = serializers.BooleanField()


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
        except (OSError, smtplib.SMTPException) as error:
            return Response(
                {"detail": f"the mail server did not take the messages ({error}); retry later"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        except (TemplateError, ArithmeticError, TypeError, ValueError) as error:
            # The templates render for the sample recipient, not necessarily for every profile.
            raise exceptions.ValidationError({"detail": f"not sent: {error}"}) from None
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
