"""The demo client of `make run` and the browser tests: the patent's golf shop (seed_demo)."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from aggregation.records import record_new
from aggregation.services import spool_consolidate
from aggregation.spool import spool_append
from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    EmailCampaign,
    Experiment,
    ExperimentGroup,
    Placement,
)
from coremetrics.demo_shop import DEMO_CLIENT_SLUG, PRODUCTS
from coremetrics.models import Client, Membership, Site
from delivery.identity import visitor_id_issue
from segmentation.models import Segment

DEMO_PASSWORD = "coremetrics"

BANNERS = [
    # name, file, segment, rule, priority
    ("Banner: thanks, 15% off", "buyer", "Bought at least once",
     {"field": "purchases", "op": "gte", "value": 1}, 1),
    ("Banner: your cart is waiting", "cart", "Abandoned a cart, never bought",
     {"all": [{"field": "cart_abandonments", "op": "gte", "value": 1},
              {"field": "purchases", "op": "eq", "value": 0}]}, 2),
    ("Banner: welcome back", "returning", "Visited more than once",
     {"field": "visits", "op": "gt", "value": 1}, 3),
    ("Banner: first time, 10% off", "first", "First-time visitors",
     {"field": "first_time", "op": "is", "value": True}, 4),
]  # fmt: skip


@transaction.atomic
def demo_client_seed(*, base_url: str) -> Client:
    """Create (or bring up to date) the golf shop: content, segments, campaign and users."""
    base = base_url.rstrip("/")
    client, _ = Client.objects.update_or_create(
        slug=DEMO_CLIENT_SLUG, defaults={"name": "Fairway Golf (demo)", "timezone": "UTC"}
    )
    Site.objects.get_or_create(client=client, origin=base)
    placement, _ = Placement.objects.update_or_create(
        client=client, key="home-banner", defaults={"name": "Home page banner"}
    )

    def banner(name: str, file: str) -> Content:
        content, _ = Content.objects.update_or_create(
            client=client,
            name=name,
            defaults={
                "type": Content.Type.IMAGE,
                "url": f"{base}/static/demo/banners/{file}.svg",
                "click_url": f"{base}/demo/shop/",
                "alt_text": name.removeprefix("Banner: "),
            },
        )
        return content

    default = banner("Banner: spring season (default)", "default")
    campaign, _ = Campaign.objects.update_or_create(
        client=client,
        key="spring-banner",
        defaults={"name": "Spring banner", "placement": placement, "default_content": default},
    )
    for name, file, segment_name, rule, priority in BANNERS:
        segment, _ = Segment.objects.update_or_create(
            client=client, name=segment_name, defaults={"rule": rule}
        )
        Attachment.objects.update_or_create(
            campaign=campaign,
            segment=segment,
            defaults={"client": client, "content": banner(name, file), "priority": priority},
        )
    _experiment_seed(client, campaign, banner)
    offer_placement, _ = Placement.objects.update_or_create(
        client=client, key="side-offer", defaults={"name": "Product page offer"}
    )
    offer, _ = Content.objects.update_or_create(
        client=client,
        name="Script: free tees offer",
        defaults={"type": Content.Type.SCRIPT, "url": f"{base}/static/demo/offer.js"},
    )
    Campaign.objects.update_or_create(
        client=client,
        key="tee-offer",
        defaults={"name": "Tee offer", "placement": offer_placement, "default_content": offer},
    )
    _email_seed(client, base)
    _users_seed(client)
    _other_client_seed(base)
    return client


def _email_seed(client: Client, base: str) -> None:
    """An email campaign to the buyers, ready to send (messages go to var/mail in the demo)."""
    campaign, _ = EmailCampaign.objects.update_or_create(
        client=client,
        name="Driver week for buyers",
        defaults={
            "status": EmailCampaign.Status.ACTIVE,
            "from_email": "Fairway Golf <news@fairway.example>",
            "subject": "{{ attributes.first_name or 'Golfer' }}, the X1 driver is 15% off",
            "subject_b": "This week only: 15% off the X1 Carbon Driver",
            "holdout_share": 1000,
            "html_body": (
                "<html><body><h1>Hello {{ attributes.first_name or 'golfer' }},</h1>\n"
                "<p>Thanks for your {{ purchases }} order{{ 's' if purchases != 1 else '' }} "
                "with us. This week the X1 Carbon Driver is 15% off.</p>\n"
                f'<p><a href="{base}/demo/shop/product/driver-x1/">See the driver</a></p>\n'
                "</body></html>"
            ),
            "text_body": (
                "Hello {{ attributes.first_name or 'golfer' }},\n\nThis week the X1 Carbon "
                f"Driver is 15% off: {base}/demo/shop/product/driver-x1/\n"
            ),
        },
    )
    campaign.segments.set(Segment.objects.filter(client=client, name="Bought at least once"))


def _experiment_seed(client: Client, campaign: Campaign, banner) -> None:
    """A behavioural segment to look at, and a draft A/B test of the buyers' banner (a draft:
    the demo's buyers keep seeing their banner until someone starts it)."""
    Segment.objects.update_or_create(
        client=client,
        name="Bought twice in the last 30 days",
        defaults={
            "rule": {"event": "purchase", "count": {"op": "gte", "value": 2}, "within_days": 30}
        },
    )
    buyers = Attachment.objects.get(campaign=campaign, segment__name="Bought at least once")
    experiment, _ = Experiment.objects.get_or_create(
        client=client,
        name="Buyers: 15% off or free tees?",
        defaults={"attachment": buyers, "minimum_days": 14},
    )
    for key, name, is_control, content in [
        ("control", "15% off (as now)", True, buyers.content),
        ("tees", "Free tees", False, banner("Banner: free tees with any order", "buyer")),
    ]:
        ExperimentGroup.objects.update_or_create(
            experiment=experiment,
            key=key,
            defaults={"client": client, "name": name, "is_control": is_control, "share": 5000,
                      "content": content},
        )  # fmt: skip


def _users_seed(client: Client) -> None:
    users = get_user_model()
    if not users.objects.filter(username="admin").exists():
        users.objects.create_superuser("admin", "admin@example.com", DEMO_PASSWORD)
    marketer, created = users.objects.get_or_create(
        username="marketer", defaults={"is_staff": True, "email": "marketer@example.com"}
    )
    if created:
        marketer.set_password(DEMO_PASSWORD)
        marketer.save(update_fields=["password"])
    Membership.objects.update_or_create(
        user=marketer, defaults={"client": client, "role": Membership.Role.MARKETER}
    )


def _other_client_seed(base: str) -> None:
    """A second client, so the console shows that a marketer sees only their own."""
    other, _ = Client.objects.update_or_create(
        slug="tennis-outlet", defaults={"name": "Tennis Outlet (demo)"}
    )
    Placement.objects.update_or_create(
        client=other, key="top-banner", defaults={"name": "Top banner"}
    )


def demo_history_seed(*, client: Client, visitors: int, seed: int = 7) -> int:
    """Spool a synthetic past for `visitors` visitors and consolidate it; returns events made.

    The history goes through the real path (spool files, consolidation, profiles), so the demo
    starts with profiles that the segments match.
    """
    rng = random.Random(seed)
    now = timezone.now()
    count = 0
    batch: list[dict] = []
    for number in range(visitors):
        visitor_id = visitor_id_issue()
        visits = rng.choices([1, 2, 3, 5, 8], weights=[45, 25, 15, 10, 5])[0]
        start = now - timedelta(days=rng.uniform(2, 60))
        for visit in range(visits):
            at = start + timedelta(days=visit * rng.uniform(0.5, 4))
            if at > now - timedelta(hours=1):
                break
            session_id = f"{int(at.timestamp()):x}.{uuid.uuid4().hex[:12]}"
            events: list[tuple[str, dict]] = [("page_view", {})]
            for product in rng.sample(PRODUCTS, rng.randint(0, 3)):
                events.append(("product_view", {"product_id": product["id"]}))
                if rng.random() < 0.35:
                    events.append(
                        ("cart_add", {"product_id": product["id"], "value": product["price"]})
                    )
                    if rng.random() < 0.25:
                        events.append(("cart_remove", {"product_id": product["id"]}))
            if any(kind == "cart_add" for kind, _ in events) and rng.random() < 0.45:
                value = f"{rng.uniform(25, 900):.2f}"
                order = {"order_id": uuid.uuid4().hex[:10], "value": value}
                # The address a buyer gives at checkout, which email campaigns mail.
                events.append(("purchase", {**order, "email": f"golfer{number}@example.com"}))
            for offset, (kind, fields) in enumerate(events):
                moment = at + timedelta(minutes=offset * 2)
                batch.append(_record(client.pk, visitor_id, session_id, kind, moment, fields))
        if len(batch) >= 5000:
            spool_append(batch)
            count += len(batch)
            batch = []
    spool_append(batch)
    count += len(batch)
    spool_consolidate()
    return count


def _record(client_id, visitor_id, session_id, kind, moment, fields) -> dict:
    return record_new(
        client_id=client_id,
        kind=kind,
        visitor_id=visitor_id,
        session_id=session_id,
        occurred_at=moment,
        url="https://fairway.example/demo/shop/",
        currency="USD" if "value" in fields else "",
        **fields,
    )


def demo_schedule_set(*, seconds: int) -> None:
    """Run consolidation every `seconds` (the demo's pace; production keeps its own)."""
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=seconds, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.filter(task="aggregation.consolidate").update(interval=interval)
