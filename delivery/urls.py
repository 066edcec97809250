from django.urls import path

from delivery import views

app_name = "delivery"

urlpatterns = [
    path("d/v1/query", views.query, name="query"),
    path("d/v1/visitor", views.visitor, name="visitor-issue"),
    path("t/v1/<str:public_key>.js", views.tag, name="tag"),
]
