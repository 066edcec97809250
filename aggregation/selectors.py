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


def canonical_of(*, client_id: int, visitor_id: str) -> str:
    """The visitor whose profile holds this visitor's events: the one it is joined to, or
    itself (B5)."""
    link = VisitorLink.objects.filter(client_id=client_id, visitor_id=visitor_id).first()
    return link.canonical_id if link is not None else visitor_id


def categories_seen(*, client_id: int, limit: int = 200) -> list[str]:
    """The categories of the client's product and category views, for pickers: the names
    the most recently seen profiles carry (their per-category view counts)."""
    names: set[str] = set()
    recent = Profile.objects.filter(client_id=client_id).exclude(categories={})
    for categories in recent.order_by("-last_seen_at").values_list("categories", flat=True)[:2000]:
        names.update(categories)
        if len(names) >= limit:
            break
    return sorted(names)[:limit]
