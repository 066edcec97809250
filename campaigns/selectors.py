from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet

from aggregation.models import Event
from aggregation.selectors import events_per_day
from campaigns.models import Attachment, Campaign, Content


def content_answer(content: Content | None) -> dict | None:
    """The content as delivery answers it; None means 'show nothing' (also for script or HTML
    content still waiting for approval)."""
    if content is None or not content.is_approved:
        return None
    return {
        "id": content.pk,
        "name": content.name,
        "type": content.type,
        "url": content.url,
        "click_url": content.click_url,
        "html": content.html,
        "alt": content.alt_text,
    }


def contents_answers(*, content_ids: list[int]) -> dict[int, dict | None]:
    """Content id -> the content as delivery answers it."""
    return {
        content.pk: content_answer(content)
        for content in Content.objects.filter(pk__in=content_ids)
    }


def campaign_get(*, campaign_id: int) -> Campaign:
    """One campaign with what a table build needs joined in."""
    return Campaign.objects.select_related("client", "placement", "default_content").get(
        pk=campaign_id
    )


def campaigns_active(*, client_id: int | None = None) -> QuerySet[Campaign]:
    """Active campaigns (of one client, or of all), with placement and default content."""
    campaigns = Campaign.objects.filter(is_active=True, client__is_active=True)
    if client_id is not None:
        campaigns = campaigns.filter(client_id=client_id)
    return campaigns.select_related("placement", "default_content").order_by("pk")


def attachments_for_campaign(*, campaign_id: int) -> list[Attachment]:
    """The campaign's attachments, winner first (lowest priority number)."""
    return list(
        Attachment.objects.filter(campaign_id=campaign_id)
        .select_related("segment", "content")
        .order_by("priority", "pk")
    )


# Per content of the campaign over a period: answers given (impressions), visitors shown,
# clicks, and visitors who bought after first seeing it, with their orders' value (an order id
# counts once, at its highest value).
_CONTENT_REPORT_SQL = """
SELECT shown.content_id, shown.impressions, shown.visitors, coalesce(clicked.clicks, 0),
    coalesce(bought.buyers, 0), coalesce(bought.revenue, 0)
FROM (
    SELECT content_id, count(*) AS impressions, count(DISTINCT visitor_id) AS visitors
    FROM aggregation_event
    WHERE client_id = %s AND type = 'delivery' AND campaign_key = %s
        AND occurred_at >= %s AND occurred_at < %s
    GROUP BY content_id
) AS shown
LEFT JOIN (
    SELECT content_id, count(*) AS clicks FROM aggregation_event
    WHERE client_id = %s AND type = 'click' AND campaign_key = %s
        AND occurred_at >= %s AND occurred_at < %s
    GROUP BY content_id
) AS clicked ON clicked.content_id = shown.content_id
LEFT JOIN (
    SELECT exposed.content_id, count(DISTINCT exposed.visitor_id) AS buyers,
        sum(orders.value) AS revenue
    FROM (
        SELECT content_id, visitor_id, min(occurred_at) AS first_seen_at FROM aggregation_event
        WHERE client_id = %s AND type = 'delivery' AND campaign_key = %s
            AND occurred_at >= %s AND occurred_at < %s
        GROUP BY content_id, visitor_id
    ) AS exposed
    JOIN (
        SELECT visitor_id, min(occurred_at) AS occurred_at, max(coalesce(value, 0)) AS value
        FROM aggregation_event
        WHERE client_id = %s AND type = 'purchase' AND occurred_at >= %s AND occurred_at < %s
        GROUP BY visitor_id,
            CASE WHEN order_id = '' THEN '#' || event_id ELSE order_id END
    ) AS orders ON orders.visitor_id = exposed.visitor_id
        AND orders.occurred_at >= exposed.first_seen_at
    GROUP BY exposed.content_id
) AS bought ON bought.content_id = shown.content_id
"""


def campaign_report(*, campaign: Campaign, first: date, last: date) -> dict:
    """How a campaign did over whole UTC days (C3): per content (with the segments it is
    attached to), and day by day. A visitor shown several contents counts for each."""
    start = datetime.combine(first, time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time(), tzinfo=UTC)
    adapt = connection.ops.adapt_datetimefield_value
    window: list[Any] = [campaign.client_id, campaign.key, adapt(start), adapt(end)]
    purchases: list[Any] = [campaign.client_id, adapt(start), adapt(end)]
    names = dict(Content.objects.filter(client_id=campaign.client_id).values_list("pk", "name"))
    segments: dict[int, list[str]] = {}
    for content_id, segment in Attachment.objects.filter(campaign=campaign).values_list(
        "content_id", "segment__name"
    ):
        segments.setdefault(content_id, []).append(segment)
    contents = []
    with connection.cursor() as cursor:
        cursor.execute(_CONTENT_REPORT_SQL, [*window, *window, *window, *purchases])
        for content_id, impressions, visitors, clicks, buyers, revenue in cursor:
            contents.append(
                {
                    "content": names.get(content_id, "nothing") if content_id else "nothing",
                    "segments": segments.get(content_id, []),
                    "is_default": content_id == campaign.default_content_id,
                    "impressions": impressions,
                    "visitors": visitors,
                    "clicks": clicks,
                    "click_through_rate": clicks / impressions if impressions else None,
                    "buyers": buyers,
                    "conversion_rate": buyers / visitors if visitors else None,
                    "revenue": Decimal(str(revenue)),
                }
            )
    contents.sort(key=lambda row: -row["impressions"])
    events = Event.objects.filter(
        client_id=campaign.client_id,
        campaign_key=campaign.key,
        occurred_at__gte=start,
        occurred_at__lt=end,
    )
    return {
        "first": first,
        "last": last,
        "contents": contents,
        "daily": events_per_day(
            events=events,
            first=first,
            last=last,
            impressions=Count("id", filter=Q(type=Event.Type.DELIVERY)),
            clicks=Count("id", filter=Q(type=Event.Type.CLICK)),
        ),
    }
