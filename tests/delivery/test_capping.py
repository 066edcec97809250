"""Frequency capping: at most N views of a campaign's content per visitor and day or session."""

import os

import pytest

from delivery.capping import ViewCounter
from delivery.services import manifest_publish
from tests.delivery.test_query import QUERY

NOW = 1_800_000_000


def _take(counter, visitor="ann", period="2026-11-22", campaign=7, limit=2, now=NOW):
    return counter.take(
        campaign_id=campaign, visitor_id=visitor, period=period, ends_at=now + 3600, now=now,
        limit=limit,
    )  # fmt: skip


def test_a_visitor_sees_the_content_as_often_as_the_cap_allows_per_period(tmp_path):
    counter = ViewCounter(tmp_path / "views.bin")

    ann = [_take(counter) for _ in range(3)]
    others = [_take(counter, visitor="bob"), _take(counter, campaign=8), _take(counter, period="x")]
    # (the same key, as if the period had the same name: only its end tells them apart)
    after_the_period = [_take(counter, now=NOW + 3600) for _ in range(3)]

    assert ann == [True, True, False]
    assert others == [True, True, True]
    # The period's end frees the slot: counting starts again.
    assert after_the_period == [True, True, False]


def test_the_node_s_processes_share_one_count(tmp_path):
    counter = ViewCounter(tmp_path / "views.bin")
    assert _take(counter, limit=3) is True

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # another worker process of the node
        child = ViewCounter(tmp_path / "views.bin")
        os.write(write, b"1" if _take(child, limit=3) else b"0")
        os._exit(0)
    os.waitpid(pid, 0)

    assert os.read(read, 1) == b"1"
    assert [_take(counter, limit=3), _take(counter, limit=3)] == [True, False]


@pytest.mark.django_db
@pytest.mark.parametrize("period", ["day", "session"])
def test_past_the_cap_the_visitor_gets_the_default(query_client, published, settings, period):
    attachment, buyer = published
    campaign = attachment.campaign
    campaign.cap_views, campaign.cap_period = 2, period
    campaign.save()
    manifest_publish(client_id=campaign.client_id)
    params = {"k": campaign.client.public_key, "v": buyer.visitor_id, "p": campaign.placement.key}
    session = query_client.get(QUERY, params).json()["session"]

    answers = [query_client.get(QUERY, {**params, "s": session}).json() for _ in range(2)]
    later = query_client.get(QUERY, {**params, "s": session, "i": str(31 * 60)}).json()

    [first], [second] = (answer["placements"] for answer in answers)
    assert (first["source"], first["content"]["id"]) == ("table", attachment.content_id)
    assert (second["source"], second["content"]["id"]) == ("capped", campaign.default_content_id)
    # A new session (idle past 30 minutes) starts a new count only when capping per session.
    assert later["session"] != session
    assert later["placements"][0]["source"] == ("table" if period == "session" else "capped")
