"""The segmentation API (/api/v1): why a visitor gets what they get (B1)."""

from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.models import Campaign
from coremetrics.tenancy import client_of
from segmentation.services import visitor_explain


class ExplainQuery(serializers.Serializer):
    visitor = serializers.CharField(max_length=64)


class CampaignExplainView(APIView):
    """GET /api/v1/campaigns/<id>/explain?visitor=<visitor id>"""

    def get(self, request: Request, campaign_id: int) -> Response:
        client = None if request.user.is_superuser else client_of(request)
        if client is None and not request.user.is_superuser:
            raise NotFound("no such campaign")
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
