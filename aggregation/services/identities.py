"""Identity stitching (B5): visitors who gave the same email join one profile; a marketer can
separate them again, for good (docs/aggregation.md)."""

from __future__ import annotations

import logging
from collections import defaultdict

from django.db import transaction
from django.db.models import Min
from django.db.models.functions import Lower
from django.utils import timezone

from aggregation.models import Event, Profile, VisitorLink, VisitorSeparation
from aggregation.services.profiles import identities_lock, profiles_rebuild

logger = logging.getLogger(__name__)


# At most this many visitors are joined under one email: a shared address (a shop's kiosk,
# a typo'd or made-up one) must not fuse strangers into one profile. Beyond it, none joins.
MAX_JOINED = 20
PLACEHOLDER_LOCAL_PARTS = {"none", "noreply", "no-reply", "null", "na", "n/a", "test", "unknown"}


def identities_stitch(*, client_id: int, emails: dict[str, str]) -> set[str]:
    """Join visitors who gave the same email under one profile (B5; docs/aggregation.md).

    The visitor seen first becomes (or stays) canonical; every other visitor with that email,
    and every visitor already linked to one of them, is linked to it. Returns the canonical
    visitors whose profiles must be recomputed.
    """
    identities_lock(client_id, exclusive=True)
    by_email: dict[str, set[str]] = defaultdict(set)
    for visitor_id, email in emails.items():
        if email.split("@")[0] not in PLACEHOLDER_LOCAL_PARTS:
            by_email[email].add(visitor_id)
    # One query for every address of the file (an index on the client and lower(email)).
    known = (
        Profile.objects.filter(client_id=client_id)
        .annotate(lower_email=Lower("email"))
        .filter(lower_email__in=list(by_email))
        .values_list("lower_email", "visitor_id")
    )
    for email, visitor_id in known:
        by_email[email].add(visitor_id)
    # Joins a marketer undid stay undone: a visitor kept apart from an address never joins
    # under it again, nor does any group it has joined since (under another address).
    apart: dict[str, set[str]] = defaultdict(set)
    for visitor_id, email in VisitorSeparation.objects.filter(
        client_id=client_id, email__in=list(by_email)
    ).values_list("visitor_id", "email"):
        apart[email].add(visitor_id)
    joined: set[str] = set()
    for email, visitor_ids in by_email.items():
        links = dict(
            VisitorLink.objects.filter(client_id=client_id, visitor_id__in=visitor_ids).values_list(
                "visitor_id", "canonical_id"
            )
        )
        canonicals = {links.get(visitor_id, visitor_id) for visitor_id in visitor_ids}
        group = VisitorLink.objects.filter(client_id=client_id, canonical_id__in=canonicals)
        if apart[email]:
            canonicals -= apart[email] | {
                canonical
                for member, canonical in group.values_list("visitor_id", "canonical_id")
                if member in apart[email]
            }
            group = group.filter(canonical_id__in=canonicals)
        if len(canonicals) < 2:
            continue
        if len(canonicals) + group.count() > MAX_JOINED:
            logger.warning("not joining the visitors of %s: more than %d", email, MAX_JOINED)
            continue
        seen = dict(
            Event.objects.filter(client_id=client_id, visitor_id__in=canonicals)
            .values("visitor_id")
            .annotate(first=Min("occurred_at"))
            .values_list("visitor_id", "first")
        )
        chosen = min(canonicals, key=lambda v: (seen.get(v) or timezone.now(), v))
        others = canonicals - {chosen}
        VisitorLink.objects.filter(client_id=client_id, canonical_id__in=others).update(
            canonical_id=chosen
        )
        VisitorLink.objects.bulk_create(
            [
                VisitorLink(client_id=client_id, visitor_id=v, canonical_id=chosen, email=email)
                for v in others
            ],
            update_conflicts=True,
            unique_fields=["client", "visitor_id"],
            update_fields=["canonical_id", "email", "linked_at"],
        )
        Profile.objects.filter(client_id=client_id, visitor_id__in=others).delete()
        joined.add(chosen)
    return joined


def identities_separate(*, links: list[VisitorLink]) -> int:
    """Undo joins: each visitor gets its own profile again, the canonical one is recomputed.

    The link is what a marketer removes when the join was wrong (a shared or mistyped address);
    the separated visitor is then never joined under that address again (VisitorSeparation).
    """
    separated = 0
    for client_id in sorted({link.client_id for link in links}):
        own = [link for link in links if link.client_id == client_id]
        with transaction.atomic():
            identities_lock(client_id, exclusive=True)
            VisitorLink.objects.filter(pk__in=[link.pk for link in own]).delete()
            VisitorSeparation.objects.bulk_create(
                [
                    VisitorSeparation(
                        client_id=client_id, visitor_id=link.visitor_id, email=link.email.lower()
                    )
                    for link in own
                ],
                ignore_conflicts=True,
            )
            touched = {link.visitor_id for link in own} | {link.canonical_id for link in own}
            profiles_rebuild(client_id=client_id, visitor_ids=touched)
        separated += len(own)
    return separated
