"""URLconf of the delivery benchmark's variant (d) (bench/wsgi.py): the project's URLs plus one
plain Django view answering from one ORM lookup, through the project's whole MIDDLEWARE."""

from __future__ import annotations

from functools import cache

from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from campaigns.models import Content
from campaigns.selectors import campaigns_active, content_answer
from delivery.models import Visitor


@cache
def _answers() -> tuple[dict[int, dict | None], dict[str, dict | None]]:
    """Content id -> answer, placement key -> default answer: read once per process, as
    delivery holds content metadata per table version (the benchmark's database has one client)."""
    contents = {content.pk: content_answer(content) for content in Content.objects.all()}
    defaults = {
        campaign.placement.key: content_answer(campaign.default_content)
        for campaign in campaigns_active()
    }
    return contents, defaults


def answer(request: HttpRequest) -> JsonResponse:
    placement = request.GET.get("p", "")
    cookie_data = (
        Visitor.objects.filter(
            client__public_key=request.GET.get("k", ""), visitor_id=request.GET.get("v", "")
        )
        .values_list("cookie_data", flat=True)
        .first()
    )
    contents, defaults = _answers()
    if cookie_data is None:
        content = defaults.get(placement)
    else:
        content = contents.get(cookie_data["content"])
    return JsonResponse({"placement": placement, "content": content})


urlpatterns = [
    path("bench/answer", answer, name="bench-answer"),
    path("", include("coremetrics.urls")),
]
