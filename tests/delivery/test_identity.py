import pytest

from delivery.identity import (
    VISITOR_ID_RE,
    client_address,
    ip_truncate,
    session_id_issue,
    session_is_current,
    visitor_id_is_valid,
    visitor_id_issue,
)

NOW = 1_793_534_400.0


def _replace(text, index, character):
    return text[:index] + character + text[index + 1 :]


def _other(character):
    return "b" if character == "a" else "a"


def test_visitor_ids_are_unique_and_valid():
    issued = [visitor_id_issue() for _ in range(10_000)]

    assert len(set(issued)) == 10_000
    assert all(VISITOR_ID_RE.match(visitor_id) for visitor_id in issued)
    assert all(visitor_id_is_valid(visitor_id) for visitor_id in issued)


def test_visitor_id_with_tampered_mac_is_invalid():
    visitor_id = visitor_id_issue()

    assert not visitor_id_is_valid(_replace(visitor_id, -1, _other(visitor_id[-1])))


def test_visitor_id_with_tampered_token_is_invalid():
    visitor_id = visitor_id_issue()

    assert not visitor_id_is_valid(_replace(visitor_id, 0, _other(visitor_id[0])))
    assert not visitor_id_is_valid(_replace(visitor_id, 19, _other(visitor_id[19])))


def test_visitor_id_made_under_another_secret_is_invalid(settings):
    visitor_id = visitor_id_issue()

    settings.SECRET_KEY = "another-secret-key-for-another-installation"

    assert not visitor_id_is_valid(visitor_id)
    assert visitor_id_is_valid(visitor_id_issue())


@pytest.mark.parametrize(
    "make",
    [
        lambda visitor_id: "",
        lambda visitor_id: "not-a-visitor-id",
        lambda visitor_id: visitor_id + "0",
        lambda visitor_id: visitor_id + "\n",
        lambda visitor_id: " " + visitor_id,
        lambda visitor_id: visitor_id[1:],
        lambda visitor_id: visitor_id.replace(".", ":"),
        lambda visitor_id: visitor_id[:21] + "ABCDEF0123",
        lambda visitor_id: visitor_id.split(".")[0],
        lambda visitor_id: "' OR 1=1 --.0123456789",
    ],
    ids=[
        "empty",
        "words",
        "longer-mac",
        "trailing-newline",
        "leading-space",
        "shorter-token",
        "other-separator",
        "uppercase-mac",
        "token-only",
        "sql",
    ],
)
def test_visitor_id_of_wrong_format_is_invalid(make):
    assert not visitor_id_is_valid(make(visitor_id_issue()))


def _session(now=NOW):
    return session_id_issue(
        client_key="pk-shop", visitor_id=visitor_id_issue(), ip="203.0.113.0", now=now
    )


def test_session_id_carries_its_start_time():
    session_id = _session()

    assert session_id.split(".")[0] == f"{int(NOW):x}"
    assert len(session_id.split(".")[1]) == 12


def test_session_ids_differ_per_visitor_ip_and_time():
    visitor_id = visitor_id_issue()
    make = dict(client_key="pk-shop", visitor_id=visitor_id, ip="203.0.113.0", now=NOW)

    ids = {
        session_id_issue(**make),
        session_id_issue(**{**make, "client_key": "pk-other"}),
        session_id_issue(**{**make, "visitor_id": visitor_id_issue()}),
        session_id_issue(**{**make, "ip": "198.51.100.0"}),
        session_id_issue(**{**make, "now": NOW + 0.5}),
    }

    assert len(ids) == 5
    assert session_id_issue(**make) == session_id_issue(**make)


def test_session_is_current_when_fresh():
    session_id = _session()

    assert session_is_current(session_id, idle_seconds=None, now=NOW)
    assert session_is_current(session_id, idle_seconds=0, now=NOW + 1)


def test_session_ends_after_max_hours(settings):
    settings.SESSION_MAX_HOURS = 2
    session_id = _session()

    assert session_is_current(session_id, idle_seconds=None, now=NOW + 2 * 3600 - 1)
    assert not session_is_current(session_id, idle_seconds=None, now=NOW + 2 * 3600)
    assert not session_is_current(session_id, idle_seconds=0, now=NOW + 5 * 3600)


def test_session_ends_when_idle_too_long(settings):
    settings.SESSION_IDLE_MINUTES = 10
    session_id = _session()

    assert session_is_current(session_id, idle_seconds=599.9, now=NOW + 700)
    assert not session_is_current(session_id, idle_seconds=600, now=NOW + 700)
    assert not session_is_current(session_id, idle_seconds=3600, now=NOW + 700)


def test_session_started_in_the_future_is_not_current():
    assert not session_is_current(_session(now=NOW + 60), idle_seconds=None, now=NOW)


@pytest.mark.parametrize(
    "session_id",
    [
        "",
        "garbage",
        "6b000000",
        "6b000000.",
        "zzzzzzzz.0123456789ab",
        "6b000000.0123456789AB",
        "6b000000.0123456789abc",
        "6b000000.0123456789a",
        "6b0000.0123456789ab",
        "6b000000_0123456789ab",
    ],
)
def test_garbage_session_id_is_not_current(session_id):
    assert not session_is_current(session_id, idle_seconds=None, now=NOW)


def test_session_id_with_trailing_newline_is_not_current():
    assert not session_is_current(_session() + "\n", idle_seconds=None, now=NOW)


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("203.0.113.0", "203.0.113.0"),
        ("10.1.2.255", "10.1.2.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("2001:0db8:abcd:ffff::1", "2001:db8:abcd::"),
        ("::1", "::"),
        ("garbage", ""),
        ("", ""),
        ("203.0.113.77:8080", ""),
        ("203.0.113.256", ""),
        ("203.0.113.77, 10.0.0.1", ""),
    ],
)
def test_ip_truncate(ip, network):
    assert ip_truncate(ip) == network


def test_the_browsers_address_is_the_proxys_last_entry_only_when_the_proxy_is_trusted(settings):
    meta = {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9"}

    settings.TRUST_X_FORWARDED_FOR = False
    untrusted = client_address(meta)
    settings.TRUST_X_FORWARDED_FOR = True
    trusted = client_address(meta)

    assert (untrusted, trusted) == ("10.0.0.5", "203.0.113.9")
    assert client_address({"REMOTE_ADDR": "10.0.0.5"}) == "10.0.0.5"
