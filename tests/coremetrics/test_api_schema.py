"""The API against its own OpenAPI schema (schemathesis): data drawn from the schema for every
operation, sent to a live server with a client's write token; no answer may be a 5xx, and
every answer must be one the schema describes."""

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings

from coremetrics.tokens import api_token_create
from tests.factories import AttachmentFactory, ClientFactory, ProfileFactory

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = 6


def _operations():
    document = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_answers_as_its_schema_says(live_server):
    client = ClientFactory()
    AttachmentFactory(campaign__client=client)
    ProfileFactory(client=client, purchases=1)
    _, key = api_token_create(client=client, name="schemathesis", scope="write")
    headers = {"Authorization": f"Bearer {key}"}
    operations = _operations()
    failures = {}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case):
            # Every check but positive_data_acceptance: an id that is well-formed by the schema
            # yet names no row of this client is rightly refused (400/404).
            case.call_and_validate(
                base_url=live_server.url,
                headers=headers,
                excluded_checks=[schemathesis.checks.positive_data_acceptance],
            )

        try:
            check()
        except (Exception, BaseExceptionGroup) as error:  # all operations run; all are reported
            failures[f"{operation.method.upper()} {operation.path}"] = str(error)[:2000]

    assert len(operations) >= 30
    assert failures == {}
