"""Aggregation's services: ingest and consolidation (consolidation.py), profiles and identity
stitching (profiles.py), imports (imports.py)."""

from aggregation.services.consolidation import (
    MAX_FILE_ATTEMPTS,
    SLICE_LINES,
    CollectResult,
    archives_prune,
    click_spool,
    consolidation_lock,
    dead_letter_path,
    dead_letters,
    deliveries_spool,
    events_collect,
    events_load,
    quarantine_requeue,
    spool_consolidate,
    spool_file_load,
)
from aggregation.services.profiles import (
    profiles_rebuild,
    profiles_rebuild_all,
    profiles_settle,
)

__all__ = [
    "MAX_FILE_ATTEMPTS",
    "SLICE_LINES",
    "CollectResult",
    "archives_prune",
    "click_spool",
    "consolidation_lock",
    "dead_letter_path",
    "dead_letters",
    "deliveries_spool",
    "events_collect",
    "events_load",
    "profiles_rebuild",
    "profiles_rebuild_all",
    "profiles_settle",
    "quarantine_requeue",
    "spool_consolidate",
    "spool_file_load",
]
