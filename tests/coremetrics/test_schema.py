"""Indexes the loads pay for: none that another index already serves."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("table", ["aggregation_profile", "delivery_visitor"])
def test_no_client_index_beside_the_unique_client_visitor_index(table):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexed = [
        (constraint["columns"], bool(constraint["unique"]))
        for constraint in constraints.values()
        if constraint["index"] or constraint["unique"]
    ]
    assert (["client_id", "visitor_id"], True) in indexed
    assert (["client_id"], False) not in indexed
