from django.db.models import Q, QuerySet

from aggregation.models import Profile, VisitorLink


def profiles_matching(*, client_id: int, condition: Q) -> QuerySet[Profile]:
    """The client's profiles that satisfy a compiled segment rule."""
    return Profile.objects.filter(client_id=client_id).filter(condition)


def visitor_links(*, client_id: int) -> dict[str, str]:
    """Linked visitor id -> the canonical visitor id whose profile holds its events (B5)."""
    return dict(
        VisitorLink.objects.filter(client_id=client_id).values_list("visitor_id", "canonical_id")
    )
