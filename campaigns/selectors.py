from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from aggregation.models import Event
from aggregation.selectors import (
    canonicals_of,
    events_per_day,
    purchases_of,
    visitors_joined,
)
from campaigns.bucketing import HOLDOUT
from campaigns.mailtracking import Activity, activities_classify
from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    EmailActivity,
    EmailCampaign,
    EmailMessage,
)
from campaigns.statistics import Sample, conversion_compare, revenue_compare


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


MAILED_STATUSES = {
    EmailMessage.Status.SENT,
    EmailMessage.Status.BOUNCED,
    EmailMessage.Status.FAILED,
    EmailMessage.Status.INTERRUPTED,
}


def email_campaign_results(*, campaign: EmailCampaign, mailing_id: int | None = None) -> dict:
    """What a campaign's mailings did (B3, B4), over all of them or one: sent, delivered,
    bounced; opened and clicked, every recorded one and people's only (the machine rules of
    campaigns/mailtracking.py, with how many each rule set aside); unsubscribed; purchases
    and revenue attributed to a person's click within the attribution window; per subject;
    and the lift of being mailed against the holdout."""
    messages = EmailMessage.objects.filter(campaign=campaign)
    if mailing_id is not None:
        messages = messages.filter(mailing_id=mailing_id)
    rows = {
        row[0]: row
        for row in messages.values_list(
            "pk", "visitor_id", "group", "status", "sent_at", "unsubscribed_at",
            "mailing__started_at",
        )
    }  # fmt: skip
    activities: dict[int, list[Activity]] = defaultdict(list)
    for message_id, kind, at, user_agent, ip, is_decoy, url in (
        EmailActivity.objects.filter(message__in=messages)
        .values_list("message_id", "kind", "at", "user_agent", "ip", "is_decoy", "url")
        .order_by("at", "id")
    ):
        activities[message_id].append(Activity(kind, at, user_agent, ip, is_decoy, url))
    opened: dict[str, set[int]] = {"raw": set(), "human": set()}
    clicked: dict[str, set[int]] = {"raw": set(), "human": set()}
    human_clicks: dict[int, list[datetime]] = defaultdict(list)
    machine_reasons: Counter[str] = Counter()
    for message_id, recorded in activities.items():
        for activity, reason in activities_classify(
            recorded,
            sent_at=rows[message_id][4],
            machine_networks=settings.EMAIL_MACHINE_NETWORKS,
            soon_seconds=settings.EMAIL_MACHINE_SOON_SECONDS,
            burst_seconds=settings.EMAIL_MACHINE_BURST_SECONDS,
        ):
            if reason:
                machine_reasons[reason] += 1
            if activity.is_decoy:
                continue  # no person sees it: it only unmasks the scanner
            opened["raw"].add(message_id)
            if activity.kind == "click":
                clicked["raw"].add(message_id)
            if not reason:  # a person's click opened the message too
                opened["human"].add(message_id)
                if activity.kind == "click":
                    clicked["human"].add(message_id)
                    human_clicks[message_id].append(activity.at)
    window = timedelta(days=campaign.attribution_days)
    # A recipient may have been joined to another visitor since the mailing (B5).
    canonical = canonicals_of(
        client_id=campaign.client_id, visitor_ids={row[1] for row in rows.values()}
    )
    purchases = _recipients_purchases(campaign, rows.values(), canonical, window)
    # A purchase goes to the latest person's click of its buyer within the window before it.
    clicks_of: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for message_id, moments in human_clicks.items():
        clicks_of[canonical[rows[message_id][1]]] += [(at, message_id) for at in moments]
    attributed: dict[int, list[Decimal]] = defaultdict(list)
    for buyer, bought in purchases.items():
        for at, value in bought:
            before = [click for click in clicks_of.get(buyer, []) if at - window <= click[0] <= at]
            if before:
                attributed[max(before)[1]].append(value)
    statuses = Counter(row[3] for row in rows.values())
    return {
        "attribution_days": campaign.attribution_days,
        "totals": _email_totals(list(rows), statuses, rows, opened, clicked, attributed),
        "groups": [
            _email_totals(
                [pk for pk, row in rows.items() if row[2] == group],
                Counter(row[3] for row in rows.values() if row[2] == group),
                rows,
                opened,
                clicked,
                attributed,
            )
            | {"key": group, "subject": campaign.subject_b if group == "b" else campaign.subject}
            for group in ("a", "b")
            if campaign.subject_b or group == "a"
        ],
        "machine_reasons": machine_reasons.most_common(),
        "holdout": _email_holdout(rows, canonical, purchases, window)
        if campaign.holdout_share
        else None,
    }


def _recipients_purchases(
    campaign: EmailCampaign, rows, canonical: dict[str, str], window: timedelta
) -> dict[str, list[tuple[datetime, Decimal]]]:
    """The purchases of a campaign's recipients (any visitor joined to them) from its first
    mailing to the end of the window after its last."""
    rows = list(rows)
    if not rows:
        return {}
    members = visitors_joined(client_id=campaign.client_id, canonicals=set(canonical.values()))
    first = min(row[6] for row in rows)
    last = min(max(row[4] or row[6] for row in rows) + window, timezone.now())
    bought: dict[str, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for visitor_id, at, _, value in purchases_of(
        client_id=campaign.client_id, visitor_ids=list(members), first=first, last=last
    ):
        bought[members[visitor_id]].append((at, value))
    return bought


def _email_totals(pks, statuses, rows, opened, clicked, attributed) -> dict:
    delivered = statuses[EmailMessage.Status.SENT]
    revenue = [value for pk in pks for value in attributed.get(pk, [])]
    return {
        "recipients": len(pks),
        "held_out": statuses[EmailMessage.Status.HELD_OUT],
        "waiting": statuses[EmailMessage.Status.PENDING] + statuses[EmailMessage.Status.SENDING],
        "sent": sum(statuses[status] for status in MAILED_STATUSES),
        "delivered": delivered,
        "bounced": statuses[EmailMessage.Status.BOUNCED],
        "failed": statuses[EmailMessage.Status.FAILED],
        "interrupted": statuses[EmailMessage.Status.INTERRUPTED],
        "opened_raw": sum(1 for pk in pks if pk in opened["raw"]),
        "opened_human": sum(1 for pk in pks if pk in opened["human"]),
        "clicked_raw": sum(1 for pk in pks if pk in clicked["raw"]),
        "clicked_human": sum(1 for pk in pks if pk in clicked["human"]),
        "unsubscribed": sum(1 for pk in pks if rows[pk][5] is not None),
        "purchases": len(revenue),
        "revenue": sum(revenue, Decimal(0)),
    }


def _email_holdout(rows, canonical: dict[str, str], purchases, window: timedelta) -> dict:
    """Everyone chosen to be mailed (subject a or b, whatever became of their message: intention
    to treat, so that bounces cannot flatter the mailed side) against everyone held out, one
    sample per person over the mailings: did they buy within the window after any of their
    mailings, and how much (each purchase once). The lift of being mailed (B4)."""
    people: dict[str, tuple[str, list[datetime]]] = {}
    for _, visitor_id, group, _, _, _, started_at in rows.values():
        side = HOLDOUT if group == HOLDOUT else "mailed"
        people.setdefault(canonical[visitor_id], (side, []))[1].append(started_at)
    outcomes: dict[str, list[tuple[bool, float]]] = {"mailed": [], HOLDOUT: []}
    for person, (side, starts) in people.items():
        values = [
            value
            for at, value in purchases.get(person, [])
            if any(start <= at <= start + window for start in starts)
        ]
        outcomes[side].append((bool(values), float(sum(values, Decimal(0)))))
    mailed, held = (
        Sample(len(side), sum(bought for bought, _ in side), [spent for _, spent in side])
        for side in (outcomes["mailed"], outcomes[HOLDOUT])
    )
    return {
        "mailed": mailed,
        "held_out": held,
        "conversion": conversion_compare(held, mailed),
        "revenue": revenue_compare(held, mailed),
    }
