"""Content, placements and campaigns (content.py), A/B tests (experiments.py) and email
campaigns (email.py)."""

from campaigns.models.content import (
    Attachment,
    Campaign,
    Content,
    ContentChange,
    Placement,
    _conditions_validate,
)
from campaigns.models.email import (
    EmailActivity,
    EmailCampaign,
    EmailMailing,
    EmailMessage,
    EmailSuppression,
)
from campaigns.models.experiments import Assignment, Experiment, ExperimentGroup, _salt

__all__ = [
    "Assignment",
    "Attachment",
    "Campaign",
    "Content",
    "ContentChange",
    "EmailActivity",
    "EmailCampaign",
    "EmailMailing",
    "EmailMessage",
    "EmailSuppression",
    "Experiment",
    "ExperimentGroup",
    "Placement",
    "_conditions_validate",
    "_salt",
]
