import email
import email.policy
import logging
import socket
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from aggregation.spool import spool_writer_reset
from coremetrics.models import Membership
from delivery.capping import view_counter_reset
from delivery.tables import local_tables_reset
from delivery.views import kept_tag_versions
from tests.factories import ClientFactory, MembershipFactory, UserFactory


@pytest.fixture(autouse=True, scope="session")
def static_root_present():
    """WhiteNoise warns on every request when collectstatic has not made STATIC_ROOT yet."""
    Path(django_settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path):
    """Each test gets its own spool and table directories, an empty Redis and fresh caches."""
    settings.DATA_DIR = tmp_path
    settings.SPOOL_DIR = tmp_path / "spool"
    settings.TABLE_STORE_DIR = tmp_path / "tables"
    settings.DELIVERY_NODE_DIR = tmp_path / "node"
    settings.DELIVERY_REFRESH_SECONDS = 0
    # Hashing cost is not under test; the default hasher costs ~0.3 s per user made.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # A test's rows are in its own transaction, which other threads' connections cannot see;
    # tests of parallel loading commit theirs (test_consolidation_parallel.py).
    settings.CONSOLIDATION_WORKERS = 1
    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    local_tables_reset()
    spool_writer_reset()
    view_counter_reset()
    kept_tag_versions.clear()
    yield
    spool_writer_reset()
    local_tables_reset()


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run the on_commit callbacks (task enqueues) the block registered."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def client_a():
    return ClientFactory(name="Alpha Shop", slug="alpha-shop")


@pytest.fixture
def client_b():
    return ClientFactory(name="Bravo Shop", slug="bravo-shop")


@pytest.fixture
def marketer(client, client_a):
    membership = MembershipFactory(client=client_a, role=Membership.Role.MARKETER)
    client.force_login(membership.user)
    return membership.user


@pytest.fixture
def viewer(client, client_a):
    membership = MembershipFactory(client=client_a, role=Membership.Role.VIEWER)
    client.force_login(membership.user)
    return membership.user


@pytest.fixture
def superuser(client):
    user = UserFactory(is_superuser=True)
    client.force_login(user)
    return user


@pytest.fixture
def outsider(client):
    user = UserFactory()
    client.force_login(user)
    return user


class Inbox:
    """What the SMTP server received: each message parsed, with its envelope recipients."""

    def __init__(self, port: int):
        self.port = port
        self.messages: list = []
        self.envelopes: list[list[str]] = []
        self.refused: set[str] = set()  # answered 550 at RCPT
        self.deferred: set[str] = set()  # answered 450 at RCPT (greylisting)
        self.is_sender_refused = False  # 550 at MAIL FROM
        self.on_message = None  # called with each message, before the server answers

    @property
    def recipients(self) -> list[str]:
        return [recipient for envelope in self.envelopes for recipient in envelope]

    async def handle_MAIL(self, server, session, envelope, address, options):
        if self.is_sender_refused:
            return "550 5.7.1 sender not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.lower() in self.refused:
            return "550 5.1.1 no such mailbox"
        if address.lower() in self.deferred:
            return "450 4.2.0 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)
        self.envelopes.append(list(envelope.rcpt_tos))
        if self.on_message is not None:
            self.on_message(message)
        return "250 Message accepted"


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server (aiosmtpd) on a free loopback port, which Django's SMTP backend
    sends to."""
    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # a line per SMTP command
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox(port)
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    yield inbox
    controller.stop()
