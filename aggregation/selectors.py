from django.db.models import Q, QuerySet

from aggregation.models import Profile


def profiles_matching(*, client_id: int, condition: Q) -> QuerySet[Profile]:
    """The client's profiles that satisfy a compiled segment rule."""
    return Profile.objects.filter(client_id=client_id).filter(condition)
