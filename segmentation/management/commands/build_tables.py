from django.core.management.base import BaseCommand, CommandError

from segmentation.models import TableVersion
from segmentation.services import table_build, tables_build


class Command(BaseCommand):
    help = "Build and publish lookup tables: every active campaign's, or one campaign's (S4)."

    def add_arguments(self, parser):
        parser.add_argument("--campaign", type=int, help="Build only this campaign (its id).")
        parser.add_argument("--client", type=int, help="Build only this client's campaigns.")

    def handle(self, *args, campaign=None, client=None, **options):
        if campaign is not None:
            versions = [table_build(campaign_id=campaign)]
        else:
            versions = tables_build(client_id=client)
        for version in versions:
            self.stdout.write(
                f"{version.campaign} v{version.number}: {version.status}, "
                f"{version.visitor_count} visitors {version.error}"
            )
        if any(version.status == TableVersion.Status.FAILED for version in versions):
            raise CommandError("some builds failed")
