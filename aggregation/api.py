"""The aggregation API (/api/v1): visitor profiles, server-side event batches (the collect
endpoint's validation), legacy imports and their progress."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aggregation.models import ImportJob, ImportMapping, Profile
from aggregation.services import batch_collect, batch_errors
from aggregation.services.imports import import_job_create
from coremetrics.api import (
    ClientScopedField,
    TenantModelSerializer,
    TenantReadOnlyViewSet,
    writing_client,
)


class ProfileSerializer(TenantModelSerializer):
    class Meta:
        model = Profile
        exclude = ["client", "tally"]  # the tally is consolidation's own


class ProfileViewSet(TenantReadOnlyViewSet):
    """Visitor profiles (A5), looked up by visitor id."""

    queryset = Profile.objects.order_by("-last_seen_at")
    serializer_class = ProfileSerializer
    lookup_field = "visitor_id"
    lookup_value_regex = r"[^/]{1,64}"
    filterset_fields = {
        "email": ["exact"],
        "source": ["exact"],
        "purchases": ["gte", "lte"],
        "visits": ["gte", "lte"],
    }
    ordering_fields = ["last_seen_at", "purchases", "total_spent", "visits"]


class EventBatch(serializers.Serializer):
    visitor = serializers.CharField()
    session = serializers.CharField()
    sent_at = serializers.FloatField(help_text="When the batch was sent, ms since the epoch.")
    events = serializers.ListField(child=serializers.DictField(), help_text="docs/tag.md")


class EventBatchView(APIView):
    """POST /api/v1/events: a batch of events from a client's own systems, checked like the
    tag's (docs/aggregation.md): 202 with what was accepted and why the rest was refused."""

    @extend_schema(
        request=EventBatch,
        responses={
            202: inline_serializer(
                "EventsAccepted",
                {"accepted": serializers.IntegerField(), "rejected": serializers.ListField()},
            )
        },
    )
    def post(self, request: Request) -> Response:
        client = writing_client(request)
        batch = request.data
        errors = batch_errors(batch)
        if errors:
            raise exceptions.ValidationError({"detail": "invalid batch", "errors": errors})
        try:
            result = batch_collect(client_id=client.pk, batch=batch, received_at=timezone.now())
        except OSError:
            return Response({"detail": "cannot store events now; retry later"}, status=503)
        if not result.accepted:
            raise exceptions.ValidationError(
                {"detail": "invalid events", "rejected": result.rejected}
            )
        return Response(
            {"accepted": result.accepted, "rejected": result.rejected},
            status=status.HTTP_202_ACCEPTED,
        )


class ImportMappingSerializer(TenantModelSerializer):
    class Meta:
        model = ImportMapping
        exclude = ["client"]


class ImportMappingViewSet(TenantReadOnlyViewSet):
    """Column mappings of legacy imports (set up in the console)."""

    queryset = ImportMapping.objects.order_by("name")
    serializer_class = ImportMappingSerializer


class ImportJobSerializer(TenantModelSerializer):
    class Meta:
        model = ImportJob
        exclude = ["client", "path"]
        read_only_fields = [
            "file_name", "status", "encoding", "bytes_total", "bytes_done", "rows", "records",
            "rejected_rows", "error", "created_at", "finished_at",
        ]  # fmt: skip


class ImportUpload(serializers.Serializer):
    mapping = ClientScopedField(queryset=ImportMapping.objects.all())
    file = serializers.FileField(help_text="CSV or JSON lines, UTF-8 or Latin-1")


class ImportJobViewSet(mixins.CreateModelMixin, TenantReadOnlyViewSet, viewsets.GenericViewSet):
    """Imports of legacy customer records (A4): upload a file with a mapping; follow its
    progress here (bytes_done of bytes_total, rows, records, rejected rows)."""

    queryset = ImportJob.objects.select_related("mapping").order_by("-created_at")
    serializer_class = ImportJobSerializer
    parser_classes = [MultiPartParser]
    filterset_fields = ["status", "mapping"]
    admin_only = True

    @extend_schema(
        request={"multipart/form-data": ImportUpload}, responses={202: ImportJobSerializer}
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        writing_client(request)
        upload = ImportUpload(data=request.data, context=self.get_serializer_context())
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        if file.size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE * 1000:
            raise exceptions.ValidationError({"file": ["too large for an upload; use the command"]})
        job = import_job_create(
            mapping=upload.validated_data["mapping"], file_name=file.name, source=file
        )
        return Response(self.get_serializer(job).data, status=status.HTTP_202_ACCEPTED)
