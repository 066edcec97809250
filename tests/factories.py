import uuid
from datetime import UTC, datetime

import factory
from django.contrib.auth import get_user_model

from aggregation.models import (
    Event,
    ImportJob,
    ImportMapping,
    Profile,
    VisitorLink,
    VisitorSeparation,
)
from campaigns.models import (
    Attachment,
    Campaign,
    Content,
    EmailCampaign,
    Experiment,
    Placement,
)
from coremetrics.models import Client, Membership, Site
from delivery.identity import visitor_id_issue
from delivery.models import Visitor
from segmentation.models import Segment

MOMENT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    name = factory.Sequence(lambda n: f"Client {n}")
    slug = factory.Sequence(lambda n: f"client-{n}")


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site

    client = factory.SubFactory(ClientFactory)
    origin = factory.Sequence(lambda n: f"https://shop{n}.example")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True
    password = factory.django.Password("pass-word-123")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    client = factory.SubFactory(ClientFactory)
    role = Membership.Role.MARKETER


class ContentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Content

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Banner {n}")
    type = Content.Type.IMAGE
    url = factory.Sequence(lambda n: f"https://cdn.example/banner-{n}.png")
    click_url = "https://shop.example/offer"


class PlacementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Placement

    client = factory.SubFactory(ClientFactory)
    key = factory.Sequence(lambda n: f"placement-{n}")
    name = factory.Sequence(lambda n: f"Placement {n}")


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    client = factory.SubFactory(ClientFactory)
    key = factory.Sequence(lambda n: f"campaign-{n}")
    name = factory.Sequence(lambda n: f"Campaign {n}")
    placement = factory.SubFactory(PlacementFactory, client=factory.SelfAttribute("..client"))
    default_content = factory.SubFactory(ContentFactory, client=factory.SelfAttribute("..client"))


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Segment {n}")
    rule = {"field": "purchases", "op": "gte", "value": 1}


class AttachmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Attachment

    campaign = factory.SubFactory(CampaignFactory)
    client = factory.SelfAttribute("campaign.client")
    segment = factory.SubFactory(SegmentFactory, client=factory.SelfAttribute("..client"))
    content = factory.SubFactory(ContentFactory, client=factory.SelfAttribute("..client"))
    priority = factory.Sequence(lambda n: n + 1)


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile

    client = factory.SubFactory(ClientFactory)
    visitor_id = factory.LazyFunction(visitor_id_issue)
    visits = 1
    first_seen_at = MOMENT
    last_seen_at = MOMENT


class VisitorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Visitor

    client = factory.SubFactory(ClientFactory)
    visitor_id = factory.LazyFunction(visitor_id_issue)
    first_seen_at = MOMENT
    last_seen_at = MOMENT


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    event_id = factory.LazyFunction(uuid.uuid4)
    client = factory.SubFactory(ClientFactory)
    type = Event.Type.PAGE_VIEW
    visitor_id = factory.LazyFunction(visitor_id_issue)
    session_id = "6b000000.000000000000"
    occurred_at = MOMENT
    received_at = MOMENT


class ImportMappingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ImportMapping

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Mapping {n}")
    columns = {"customer_id": "id", "email": "email"}


class ImportJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ImportJob

    mapping = factory.SubFactory(ImportMappingFactory)
    client = factory.SelfAttribute("mapping.client")
    file_name = factory.Sequence(lambda n: f"customers-{n}.csv")
    path = "/nonexistent"


class VisitorLinkFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VisitorLink

    client = factory.SubFactory(ClientFactory)
    visitor_id = factory.Sequence(lambda n: f"linked-{n}")
    canonical_id = factory.Sequence(lambda n: f"canonical-{n}")
    email = factory.Sequence(lambda n: f"shopper{n}@example.com")


class VisitorSeparationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VisitorSeparation

    client = factory.SubFactory(ClientFactory)
    visitor_id = factory.Sequence(lambda n: f"separated-{n}")
    email = factory.Sequence(lambda n: f"shared{n}@example.com")


class ExperimentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Experiment

    attachment = factory.SubFactory(AttachmentFactory)
    client = factory.SelfAttribute("attachment.client")
    name = factory.Sequence(lambda n: f"Test {n}")


class EmailCampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EmailCampaign
        skip_postgeneration_save = True

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Newsletter {n}")
    status = EmailCampaign.Status.ACTIVE
    from_email = "Golf Shop <news@golfshop.example>"
    subject = "Hello {{ attributes.first_name or 'there' }}"
    html_body = (
        "<html><body><p>Hi {{ attributes.first_name or 'there' }}, you spent "
        '${{ total_spent }}.</p><p><a href="https://golfshop.example/sale?a=1&amp;b=2">Sale</a>'
        "</p></body></html>"
    )
    text_body = "Hi {{ attributes.first_name or 'there' }}. Sale: https://golfshop.example/sale\n"

    @factory.post_generation
    def segments(self, create, extracted, **kwargs):
        if create and extracted:
            self.segments.set(extracted)
