from django.core.management.base import BaseCommand

from aggregation.services import profiles_rebuild_all


class Command(BaseCommand):
    help = "Recompute every profile from the stored events (A5); gives what consolidation gave."

    def add_arguments(self, parser):
        parser.add_argument("--client", type=int, help="Only this client's profiles (its id).")

    def handle(self, *args, client=None, **options):
        rebuilt = profiles_rebuild_all(client_id=client)
        self.stdout.write(f"{rebuilt} profiles rebuilt from events")
