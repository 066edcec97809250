from django.core.management.base import BaseCommand

from aggregation.models import Profile
from coremetrics.demo_data import (
    DEMO_PASSWORD,
    demo_client_seed,
    demo_history_seed,
    demo_schedule_set,
)
from segmentation.services import tables_build


class Command(BaseCommand):
    help = "Create the demo golf shop with synthetic visitors, and build its lookup tables."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--visitors", type=int, default=3000)
        parser.add_argument(
            "--demo-schedule",
            action="store_true",
            help="Consolidate every 30 seconds, so a demo visitor's purchase shows quickly.",
        )

    def handle(self, *args, base_url, visitors, demo_schedule, **options):
        client = demo_client_seed(base_url=base_url)
        if demo_schedule:
            demo_schedule_set(seconds=30)
        if visitors and not Profile.objects.filter(client=client).exists():
            events = demo_history_seed(client=client, visitors=visitors)
            self.stdout.write(f"spooled and consolidated {events} events of {visitors} visitors")
        for version in tables_build(client_id=client.pk):
            self.stdout.write(
                f"table {version.campaign} v{version.number}: {version.status}, "
                f"{version.visitor_count} visitors"
            )
        self.stdout.write(f"demo ready; console logins admin / marketer, password {DEMO_PASSWORD}")
