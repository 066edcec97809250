from django.core.management.base import BaseCommand, CommandError

from aggregation.services import spool_consolidate


class Command(BaseCommand):
    help = "Load closed spool files into the database and update profiles (A3)."

    def handle(self, *args, **options):
        run = spool_consolidate()
        self.stdout.write(
            f"{run.status}: {run.files} files, {run.lines} lines, {run.loaded} loaded, "
            f"{run.duplicates} duplicates, {run.bad_lines} bad, "
            f"{run.profiles_updated} profiles updated"
        )
        if run.status != run.Status.DONE:
            raise CommandError(run.error)
