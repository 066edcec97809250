"""A sender killed mid-batch and run again mails nobody twice (C2): killed at the worst moment,
while the SMTP server holds a message it has not yet acknowledged."""

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from campaigns.models import EmailMailing, EmailMessage
from campaigns.services.email import mailing_send
from tests.factories import EmailCampaignFactory, ProfileFactory, SegmentFactory

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
RECIPIENTS = 40
KILL_AT = 17  # the message the server is receiving when the sender dies


def _sender(settings, smtp_port: int, campaign_id: int) -> subprocess.Popen:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": settings.SECRET_KEY,
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "COREMETRICS_DATA_DIR": str(settings.DATA_DIR),
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "send_email_campaign", "--campaign", str(campaign_id)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a second process shares the database"
)
def test_a_killed_sender_run_again_mails_every_recipient_exactly_once(settings, smtp_server):
    client = ProfileFactory().client
    campaign = EmailCampaignFactory(
        client=client,
        segments=[SegmentFactory(client=client, rule={"field": "visits", "op": "gte", "value": 1})],
    )
    for index in range(RECIPIENTS):
        ProfileFactory(client=client, email=f"r{index:02d}@example.com")
    process = None

    def kill_mid_message(message):
        if len(smtp_server.messages) == KILL_AT:
            process.send_signal(signal.SIGKILL)
            process.wait()  # dead before the server acknowledges the message

    smtp_server.on_message = kill_mid_message
    process = _sender(settings, smtp_server.port, campaign.pk)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == -signal.SIGKILL, output
    assert len(smtp_server.messages) == KILL_AT
    claimed = EmailMessage.objects.filter(status="sending")
    assert claimed.count() == 1  # the one the server holds: it may have arrived
    assert Counter(EmailMessage.objects.values_list("status", flat=True)) == {
        "sent": KILL_AT - 1, "sending": 1, "pending": RECIPIENTS - KILL_AT,
    }  # fmt: skip

    # Run again once the claim is older than a live sender could hold it.
    settings.EMAIL_CLAIM_SECONDS = 0
    smtp_server.on_message = None
    result = mailing_send(mailing_id=EmailMailing.objects.get().pk)

    assert result.sent == RECIPIENTS - KILL_AT
    every = Counter(smtp_server.recipients)
    assert set(every.values()) == {1}
    assert sorted(every) == [f"r{index:02d}@example.com" for index in range(RECIPIENTS)]
    assert Counter(EmailMessage.objects.values_list("status", flat=True)) == {
        "sent": RECIPIENTS - 1, "interrupted": 1,
    }  # fmt: skip
    assert EmailMailing.objects.get().status == "done"
    # And a third run finds nothing to do.
    assert mailing_send(mailing_id=EmailMailing.objects.get().pk).sent == 0
    assert len(smtp_server.messages) == RECIPIENTS
