import socket

from django.core.management.base import BaseCommand

from aggregation.services.nodes import spool_node_register


class Command(BaseCommand):
    help = (
        "Register this node's spool for consolidation (several web nodes, each with its own "
        "SPOOL_DIR): a beat entry sends the consolidation to the queue spool.<node>, which this "
        "node's worker consumes (celery worker -Q celery,spool.<node>)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--node", default=socket.gethostname(), help="Default: host name.")
        parser.add_argument("--every-minutes", type=int, default=5)

    def handle(self, *args, node, every_minutes, **options):
        task = spool_node_register(node=node, every_minutes=every_minutes)
        self.stdout.write(f"{task.name}: queue {task.queue}, every {every_minutes} minutes")
