import pytest

from segmentation.services import table_build
from tests.factories import AttachmentFactory, ProfileFactory


@pytest.fixture
def published():
    """A campaign whose table sends buyers to the attachment's content."""
    attachment = AttachmentFactory(segment__rule={"field": "purchases", "op": "gte", "value": 1})
    buyer = ProfileFactory(client=attachment.client, purchases=2)
    table_build(campaign_id=attachment.campaign_id)
    return attachment, buyer
