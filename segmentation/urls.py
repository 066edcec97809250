from django.urls import path

from segmentation import api

app_name = "segmentation"

urlpatterns = [
    path(
        "api/v1/campaigns/<int:campaign_id>/explain",
        api.CampaignExplainView.as_view(),
        name="campaign-explain",
    ),
]
