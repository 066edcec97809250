"""Several web nodes, each spooling to its own disk (A2).

Each node registers itself once (`manage.py spool_node` at deploy): a beat entry, editable in
the console like the others, sends the consolidation task to the queue `spool.<node>`, and
the node's own worker consumes that queue, so every node's spool is loaded on that node.
Nodes loading at once are safe (per-spool flock; per-visitor locks in profiles.py).
"""

from __future__ import annotations

from django_celery_beat.models import IntervalSchedule, PeriodicTask

SPOOL_QUEUE_PREFIX = "spool."


def spool_queue(node: str) -> str:
    return f"{SPOOL_QUEUE_PREFIX}{node}"


def spool_node_register(*, node: str, every_minutes: int = 5) -> PeriodicTask:
    """The beat entry that consolidates this node's spool (created once; later edits kept)."""
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=every_minutes, period=IntervalSchedule.MINUTES
    )
    task, _ = PeriodicTask.objects.get_or_create(
        name=f"Consolidate the spool of {node}",
        defaults={
            "task": "aggregation.consolidate",
            "interval": interval,
            "queue": spool_queue(node),
            "description": f"Loads the spool of node {node}; its worker consumes this queue.",
        },
    )
    return task
