from datetime import date, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from coremetrics.models import Client


def clients_all(*, client_id: int | None = None) -> QuerySet[Client]:
    """Every client, active or not (or just one)."""
    clients = Client.objects.order_by("pk")
    return clients if client_id is None else clients.filter(pk=client_id)


def clients_heavy_keys() -> list[str]:
    """The public keys of the clients marked heavy (routed by campaign over delivery nodes)."""
    return list(
        Client.objects.filter(is_heavy=True)
        .order_by("public_key")
        .values_list("public_key", flat=True)
    )


def dashboard_get(*, client: Client, today: date) -> dict:
    """The console's home for one client: the last 14 days of traffic and purchases, what is
    running (campaigns with their serving table, A/B tests, email mailings, imports under
    way), the last builds and consolidations, and the problems to look at."""
    from aggregation.models import ConsolidationRun, ImportJob
    from aggregation.selectors import activity_summary
    from campaigns.models import Campaign, Content, EmailMailing, Experiment
    from segmentation.models import TableVersion

    activity = activity_summary(client_id=client.pk, first=today - timedelta(days=13), last=today)
    week_ago = timezone.now() - timedelta(days=7)
    serving = {
        version.campaign_id: version
        for version in TableVersion.objects.filter(
            client=client, status=TableVersion.Status.PUBLISHED
        )
    }
    campaigns = [
        {"campaign": campaign, "serving": serving.get(campaign.pk)}
        for campaign in Campaign.objects.filter(client=client, is_active=True)
        .select_related("placement")
        .order_by("name")
    ]
    failed_builds = TableVersion.objects.filter(
        client=client, status=TableVersion.Status.FAILED, started_at__gte=week_ago
    ).select_related("campaign")
    failed_imports = ImportJob.objects.filter(
        client=client, status=ImportJob.Status.FAILED, created_at__gte=week_ago
    )
    waiting = Content.objects.filter(client=client, is_approved=False)
    last_consolidation = ConsolidationRun.objects.exclude(
        status=ConsolidationRun.Status.SKIPPED
    ).first()
    problems = [
        *(
            f"The build of {v.campaign} (version {v.number}) failed: {v.error}"
            for v in failed_builds
        ),
        *(f"The import of {job.file_name} failed: {job.error}" for job in failed_imports),
        *(f"{content} waits for a client admin's approval" for content in waiting),
        *(
            f"{entry['campaign']} has no published table: everyone sees its default"
            for entry in campaigns
            if entry["serving"] is None
        ),
    ]
    if last_consolidation is not None and last_consolidation.status == "failed":
        # Only the outcome: a run loads every client's events, its counts are not this one's.
        problems.append("The last consolidation failed: the newest activity may be late")
    return {
        "client": client,
        "activity": activity,
        "campaigns": campaigns,
        "experiments": Experiment.objects.filter(
            client=client, status=Experiment.Status.RUNNING
        ).select_related("attachment__campaign"),
        "builds": TableVersion.objects.filter(client=client)
        .select_related("campaign")
        .order_by("-started_at")[:5],
        "imports": ImportJob.objects.filter(client=client).order_by("-created_at")[:3],
        "mailings": EmailMailing.objects.filter(client=client)
        .select_related("campaign")
        .order_by("-started_at")[:3],
        "last_consolidation": last_consolidation,
        "problems": problems,
    }
