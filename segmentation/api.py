"""The segmentation API (/api/v1): segments and their audience, table versions (status, diff,
publish, rollback), and why a visitor gets what they get (B1)."""

from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.models import Campaign
from coremetrics.api import (
    TenantModelSerializer,
    TenantReadOnlyViewSet,
    TenantViewSet,
    request_client,
    writing_client,
)
from segmentation.models import Segment, TableVersion
from segmentation.rules import RuleError, rule_validate
from segmentation.services import PublishError, segment_audience, table_publish, visitor_explain


class RuleField(serializers.JSONField):
    """A segment rule (docs/segments.md), checked whole: every problem is reported."""

    def to_internal_value(self, data: Any) -> dict:
        try:
            return rule_validate(super().to_internal_value(data))
        except RuleError as error:
            raise serializers.ValidationError(error.errors) from None


class SegmentSerializer(TenantModelSerializer):
    rule = RuleField()

    class Meta:
        model = Segment
        fields = ["id", "name", "description", "rule", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class AudienceRequest(serializers.Serializer):
    rule = RuleField()


class SegmentViewSet(TenantViewSet):
    queryset = Segment.objects.order_by("name")
    serializer_class = SegmentSerializer
    filterset_fields = ["name"]
    ordering_fields = ["name", "updated_at"]

    @extend_schema(
        request=AudienceRequest,
        responses={
            200: inline_serializer(
                "Audience",
                {"count": serializers.IntegerField(), "sample": serializers.ListField()},
            )
        },
    )
    @action(detail=False, methods=["post"])
    def audience(self, request: Request) -> Response:
        """How many of the client's visitors a rule matches now, and the latest few of them
        (a read: a viewer may ask)."""
        body = AudienceRequest(data=request.data)
        body.is_valid(raise_exception=True)
        client = request_client(request)
        if client is None:
            raise exceptions.PermissionDenied("a superuser names no client: use a client's token")
        return Response(segment_audience(client_id=client.pk, rule=body.validated_data["rule"]))

    def get_permissions(self) -> list:
        # Asking for an audience changes nothing: viewers and read tokens may.
        if self.action == "audience":
            return [IsAuthenticated()]
        return super().get_permissions()


class TableVersionSerializer(TenantModelSerializer):
    class Meta:
        model = TableVersion
        fields = [
            "id", "campaign", "number", "status", "visitor_count", "content_counts",
            "segment_counts", "segment_seconds", "overlaps", "diff", "diff_against", "is_pinned",
            "is_stored", "checksum", "error", "started_at", "finished_at", "published_at",
        ]  # fmt: skip
        read_only_fields = fields


class TableVersionViewSet(TenantReadOnlyViewSet):
    """Every build of a campaign's table: status, counts and the diff against the version that
    was serving. Publishing an older stored version is a rollback (it pins it)."""

    queryset = TableVersion.objects.order_by("-started_at", "-number")
    serializer_class = TableVersionSerializer
    filterset_fields = ["campaign", "status"]
    ordering_fields = ["number", "started_at"]

    @extend_schema(request=None, responses={200: TableVersionSerializer})
    @action(detail=True, methods=["post"])
    def publish(self, request: Request, pk: str | None = None) -> Response:
        version = self.get_object()
        writing_client(request)
        try:
            with transaction.atomic():
                version = table_publish(version=version)
        except PublishError as error:
            raise exceptions.ValidationError({"detail": str(error)}) from None
        return Response(self.get_serializer(version).data)


class ExplainQuery(serializers.Serializer):
    visitor = serializers.CharField(max_length=64)


class CampaignExplainView(APIView):
    """GET /api/v1/campaigns/<id>/explain?visitor=<visitor id>"""

    @extend_schema(
        parameters=[ExplainQuery],
        responses={200: inline_serializer("Explanation", {"served": serializers.DictField()})},
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        client = request_client(request)
        query = ExplainQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            explanation = visitor_explain(
                campaign_id=campaign_id,
                visitor_id=query.validated_data["visitor"],
                client_id=client.pk if client else None,
            )
        except Campaign.DoesNotExist:
            raise NotFound("no such campaign") from None
        return Response(explanation)
