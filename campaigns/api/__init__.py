"""The campaigns API (/api/v1): placements, content, campaigns and their builds, attachments,
A/B tests and their results. Email campaigns: campaigns/api/email.py."""

from __future__ import annotations

from datetime import date, timedelta

from django.db import models, transaction
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.api.statistics import ComparisonSerializer
from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    Experiment,
    ExperimentGroup,
    Placement,
)
from campaigns.services import (
    ExperimentError,
    content_delete,
    content_save,
    experiment_end,
    experiment_results,
    experiment_start,
)
from coremetrics.api import (
    TenantModelSerializer,
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


class ExperimentGroupResultSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    is_control = serializers.BooleanField()
    share = serializers.IntegerField(help_text="Basis points.")
    visitors = serializers.IntegerField()
    impressions = serializers.IntegerField()
    clicks = serializers.IntegerField()
    click_through_rate = serializers.FloatField(allow_null=True)
    conversions = serializers.IntegerField()
    conversion_rate = serializers.FloatField(allow_null=True)
    revenue = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=False)
    revenue_per_visitor = serializers.FloatField(allow_null=True)
    conversion = ComparisonSerializer(allow_null=True, help_text="Null for the control.")
    revenue_lift = ComparisonSerializer(allow_null=True, help_text="Null for the control.")


class ExperimentHoldoutSerializer(serializers.Serializer):
    visitors = serializers.IntegerField()
    conversions = serializers.IntegerField()
    conversion_rate = serializers.FloatField(allow_null=True)
    revenue_per_visitor = serializers.FloatField(allow_null=True)
    campaign_conversion = ComparisonSerializer(allow_null=True)
    campaign_revenue = ComparisonSerializer(allow_null=True)


class ExperimentResultsSerializer(serializers.Serializer):
    first = serializers.DateField()
    last = serializers.DateField()
    groups = ExperimentGroupResultSerializer(many=True)
    holdout = ExperimentHoldoutSerializer(
        allow_null=True, help_text="The whole campaign against its holdout; null without one."
    )
    srm_p = serializers.FloatField(allow_null=True, help_text="Sample-ratio check's p-value.")
    is_sample_ratio_mismatch = serializers.BooleanField()
    days_run = serializers.IntegerField()
    is_long_enough = serializers.BooleanField()
    suggested_winner = serializers.CharField(allow_null=True)


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
        responses={200: ExperimentResultsSerializer},
    )
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk: str | None = None) -> Response:
        experiment = self.get_object()
        period = Period(data=request.query_params)
        period.is_valid(raise_exception=True)
        today = timezone.localdate()
        first = period.validated_data.get("first") or today - timedelta(days=29)
        last = period.validated_data.get("last") or today
        results = experiment_results(experiment=experiment, first=first, last=last)
        return Response(ExperimentResultsSerializer(results).data)

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
