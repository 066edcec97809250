from django.core.management.base import BaseCommand, CommandError

from campaigns.models import EmailCampaign, EmailMailing
from campaigns.services.email import EmailError, SendDeferred, mailing_send, mailing_start


class Command(BaseCommand):
    help = (
        "Send an email campaign now (a new mailing), or finish a mailing that stopped; in this "
        "process, batch after batch, throttled as the campaign says (C2)."
    )

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--campaign", type=int, help="Start a mailing of this campaign now.")
        target.add_argument("--mailing", type=int, help="Go on with this mailing.")

    def handle(self, *args, campaign=None, mailing=None, **options):
        try:
            if campaign is not None:
                found = EmailCampaign.objects.filter(pk=campaign).first()
                if found is None:
                    raise CommandError(f"no email campaign {campaign}")
                mailing = mailing_start(campaign=found).pk
            elif not EmailMailing.objects.filter(pk=mailing).exists():
                raise CommandError(f"no mailing {mailing}")
            result = mailing_send(mailing_id=mailing)
        except (EmailError, SendDeferred) as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"mailing {mailing}: {result.sent} sent, {result.bounced} bounced, "
            f"{result.failed} failed, {result.remaining} waiting"
        )
