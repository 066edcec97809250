from django.contrib import admin
from django.urls import include, path

from coremetrics import demo_shop

urlpatterns = [
    path("", include("delivery.urls")),
    path("", include("aggregation.urls")),
    path("demo/", include(demo_shop.urlpatterns)),
    path("admin/", admin.site.urls),
]
