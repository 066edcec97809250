from django.urls import path

from campaigns import views

app_name = "campaigns"

urlpatterns = [
    path("e/o/<str:token>.gif", views.email_open, name="email-open"),
    path("e/c/<str:token>", views.email_click, name="email-click"),
    path("e/u/<str:token>", views.unsubscribe, name="email-unsubscribe"),
]
