"""COPY's text format (coremetrics/bulk.py): what goes in comes back, whatever the characters."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from django.db import connection

from aggregation.models import Profile
from aggregation.profiles import EventRow, ProfileTally
from aggregation.services.profiles import _profiles_write
from coremetrics.bulk import COPY_ROWS, copy_line, lines_insert, lines_upsert
from tests.factories import ClientFactory

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY: PostgreSQL"),
]

TRICKY = [
    "",
    "a\\b",
    "tab\there",
    "nl\nhere",
    "cr\rhere",
    "\\.",
    "\\N",
    "end\\",
    "\\\\t",
    "uni é ☃ \u2028",
    "\x01\x0b\x0c",
]


def _table():
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE round_trip (i int PRIMARY KEY, t text, j jsonb, ts timestamptz, "
            "n numeric, b bool, tn text)"
        )


def test_every_value_comes_back_as_it_went_in():
    _table()
    naive = datetime(2026, 1, 1, 12, 0, 0, 5)
    aware = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=5)))
    rows = [
        [
            index,
            text,
            orjson.dumps({"u": text, "k": [text]}).decode(),
            aware if index % 2 else naive,
            Decimal("1E+2") if index == 1 else Decimal("12.345"),
            index % 2 == 0,
            None if index % 2 else "",
        ]
        for index, text in enumerate(TRICKY)
    ]

    lines_insert(
        table="round_trip",
        columns=["i", "t", "j", "ts", "n", "b", "tn"],
        lines=map(copy_line, rows),
    )

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL timezone = 'UTC'")
        cursor.execute("SELECT i, t, j::text, ts, n, b, tn FROM round_trip ORDER BY i")
        back = cursor.fetchall()
    assert [(t, orjson.loads(j), n, b, tn) for _, t, j, _, n, b, tn in back] == [
        (row[1], {"u": row[1], "k": [row[1]]}, row[4], row[5], row[6]) for row in rows
    ]
    assert back[1][3] == aware
    assert back[0][3] == naive.replace(tzinfo=UTC)  # a naive time is the session's (UTC)


def test_an_upsert_updates_the_rows_there_and_adds_the_others_in_pieces():
    _table()
    count = COPY_ROWS + 5  # more than one COPY statement
    lines_insert(table="round_trip", columns=["i", "t"], lines=["0\told", "1\told"])

    lines_upsert(
        table="round_trip",
        columns=["i", "t"],
        lines=(copy_line([index, f"new {index}"]) for index in range(1, count)),
        conflict=["i"],
        update=["t"],
    )

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), min(t), max(i) FROM round_trip WHERE t LIKE 'new %%'")
        assert cursor.fetchone() == (count - 1, "new 1", count - 1)
        cursor.execute("SELECT t FROM round_trip WHERE i = 0")
        assert cursor.fetchone() == ("old",)


def test_a_value_without_a_copy_text_is_refused():
    class Label(str):
        pass

    assert copy_line([Label("a\tb"), Label("plain")]) == "a\\tb\tplain"
    for value in ({"k": 1}, [1], b"x"):
        with pytest.raises(TypeError):
            copy_line([value])


def test_a_profile_and_its_tally_come_back_whatever_its_texts():
    client = ClientFactory()
    now = datetime(2026, 9, 1, tzinfo=UTC)
    tally = ProfileTally()
    for number, text in enumerate(TRICKY):
        tally.add(
            EventRow(
                "cart_add" if number % 2 else "page_view",
                text[:60],
                now - timedelta(hours=number, microseconds=number),
                url=text,
                referrer=text,
                order_id=text,
                product_id=text,
                category=text or "c",
                properties={"k": text},
                event_id=f"00000000-0000-4000-8000-{number:012d}",
            )
        )
    idle = timedelta(minutes=30)

    _profiles_write(client.pk, {"v1": tally}, now=now, idle=idle, are_new=True)
    _profiles_write(client.pk, {"v2": tally, "v1": tally}, now=now, idle=idle)

    for visitor_id in ("v1", "v2"):
        profile = Profile.objects.get(client=client, visitor_id=visitor_id)
        assert profile.email == ""
        assert orjson.loads(profile.tally) == orjson.loads(orjson.dumps(tally.state()))
        assert ProfileTally.from_state(orjson.loads(profile.tally)).state() == tally.state()


def test_kept_tallies_are_compressed_as_their_column_says_however_they_are_written():
    """A long tally is compressed by lz4 (migration 0008) whether it is COPYed in or goes
    through an upsert's stage, whose values move as they are."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = "
            "'aggregation_profile'::regclass AND attname = 'tally'"
        )
        if cursor.fetchone()[0] != "l":
            pytest.skip("this PostgreSQL has no lz4")
    client = ClientFactory()
    now = datetime(2026, 9, 1, tzinfo=UTC)
    tally = ProfileTally()
    for number in range(100):  # a text of several KB: compressed
        tally.add(EventRow("page_view", f"session-{number}", now - timedelta(minutes=number)))
    idle = timedelta(minutes=30)

    _profiles_write(client.pk, {"new": tally}, now=now, idle=idle, are_new=True)
    _profiles_write(client.pk, {"new": tally, "upserted": tally}, now=now, idle=idle)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT visitor_id, pg_column_compression(tally), length(tally) "
            "FROM aggregation_profile WHERE client_id = %s ORDER BY visitor_id",
            [client.pk],
        )
        rows = cursor.fetchall()
    assert [(visitor_id, method) for visitor_id, method, _ in rows] == [
        ("new", "lz4"),
        ("upserted", "lz4"),
    ]
    assert all(length > 3000 for _, _, length in rows)
