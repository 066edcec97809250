from django.db.models import QuerySet

from campaigns.models import Attachment, Campaign, Content


def content_answer(content: Content | None) -> dict | None:
    """The content as delivery answers it; None means 'show nothing'."""
    if content is None:
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
