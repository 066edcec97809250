from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from aggregation import api as aggregation_api
from campaigns import api as campaigns_api
from campaigns.api import email as email_api
from coremetrics import demo_shop
from segmentation import api as segmentation_api

router = DefaultRouter(trailing_slash=False)
router.register("placements", campaigns_api.PlacementViewSet, basename="placement")
router.register("contents", campaigns_api.ContentViewSet, basename="content")
router.register("campaigns", campaigns_api.CampaignViewSet, basename="campaign")
router.register("attachments", campaigns_api.AttachmentViewSet, basename="attachment")
router.register("experiments", campaigns_api.ExperimentViewSet, basename="experiment")
router.register("email-campaigns", email_api.EmailCampaignViewSet, basename="email-campaign")
router.register("email-mailings", email_api.EmailMailingViewSet, basename="email-mailing")
router.register("email-messages", email_api.EmailMessageViewSet, basename="email-message")
router.register(
    "email-suppressions", email_api.EmailSuppressionViewSet, basename="email-suppression"
)
router.register("segments", segmentation_api.SegmentViewSet, basename="segment")
router.register("table-versions", segmentation_api.TableVersionViewSet, basename="table-version")
router.register("profiles", aggregation_api.ProfileViewSet, basename="profile")
router.register("import-mappings", aggregation_api.ImportMappingViewSet, basename="import-mapping")
router.register("imports", aggregation_api.ImportJobViewSet, basename="import")

api_urlpatterns = [
    path("events", aggregation_api.EventBatchView.as_view(), name="events"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    *router.urls,
]

urlpatterns = [
    # Nothing public lives at the root: the console is where a person arriving here belongs.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("", include("delivery.urls")),
    path("", include("aggregation.urls")),
    path("", include("segmentation.urls")),
    path("", include("campaigns.urls")),
    path("api/v1/", include((api_urlpatterns, "api"))),
    path("demo/", include(demo_shop.urlpatterns)),
    path("admin/", admin.site.urls),
]

# Sending providers' delivery reports (bounces, complaints; docs/email.md): only with a webhook
# secret, so that nobody can report a bounce for an address they do not own.
if settings.ANYMAIL.get("WEBHOOK_SECRET"):
    urlpatterns.append(path("anymail/", include("anymail.urls")))
