from django.urls import path

from aggregation import views

app_name = "aggregation"

urlpatterns = [
    path("c/v1/collect", views.collect, name="collect"),
]
