"""Console users of two clients, logged in through the test client."""

import pytest

from coremetrics.models import Membership
from tests.factories import ClientFactory, MembershipFactory, UserFactory


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
