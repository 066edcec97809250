from django.urls import path, re_path

from delivery import views

app_name = "delivery"

urlpatterns = [
    path("d/v1/query", views.query, name="query"),
    path("d/v1/content", views.fragment, name="fragment"),
    path("d/v1/image", views.image, name="image"),
    path("d/v1/visitor", views.visitor, name="visitor-issue"),
    path("d/v1/click", views.click, name="click"),
    re_path(
        r"^t/v1/(?P<public_key>[A-Za-z0-9_-]{1,40})(?:\.(?P<version>[0-9a-f]{12}))?\.js$",
        views.tag,
        name="tag",
    ),
]
