"""Aggregation's services: ingest (ingest.py), consolidation (consolidation.py), profiles
(profiles.py), identity stitching (identities.py), imports (imports.py)."""

from aggregation.services.consolidation import (
    MAX_FILE_ATTEMPTS,
    SLICE_LINES,
    archives_prune,
    consolidation_lock,
    dead_letter_path,
    dead_letters,
    events_load,
    quarantine_requeue,
    spool_consolidate,
)
from aggregation.services.identities import identities_separate, identities_stitch
from aggregation.services.ingest import (
    CollectResult,
    batch_collect,
    batch_errors,
    click_spool,
    deliveries_spool,
    email_activity_spool,
    events_collect,
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
    "batch_collect",
    "batch_errors",
    "click_spool",
    "consolidation_lock",
    "dead_letter_path",
    "dead_letters",
    "deliveries_spool",
    "email_activity_spool",
    "events_collect",
    "events_load",
    "identities_separate",
    "identities_stitch",
    "profiles_rebuild",
    "profiles_rebuild_all",
    "profiles_settle",
    "quarantine_requeue",
    "spool_consolidate",
]
