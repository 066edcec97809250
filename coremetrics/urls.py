from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from coremetrics import demo_shop

urlpatterns = [
    # Nothing public lives at the root: the console is where a person arriving here belongs.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("", include("delivery.urls")),
    path("", include("aggregation.urls")),
    path("", include("segmentation.urls")),
    path("demo/", include(demo_shop.urlpatterns)),
    path("admin/", admin.site.urls),
]
