"""Telling people's opens and clicks from machines' (B3): the rules of activities_classify."""

from datetime import UTC, datetime, timedelta

from campaigns.mailtracking import (
    Activity,
    activities_classify,
    html_links_track,
    landing_token,
    landing_url,
    text_links_track,
)

SENT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PERSON = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
NETWORKS = ["17.0.0.0/8", "40.92.0.0/15"]


def _at(seconds: float) -> datetime:
    return SENT + timedelta(seconds=seconds)


def _classify(*activities: Activity) -> list[str]:
    return [
        reason
        for _, reason in activities_classify(
            activities, sent_at=SENT, machine_networks=NETWORKS, soon_seconds=10, burst_seconds=2
        )
    ]


def test_a_persons_open_and_click_are_human():
    assert _classify(
        Activity("open", _at(3600), PERSON, "203.0.113.0"),
        Activity("click", _at(3700), PERSON, "203.0.113.0", url="https://s.example/a"),
    ) == ["", ""]


def test_apple_privacy_protection_and_an_empty_agent_are_machines():
    assert _classify(
        Activity("open", _at(600), "Mozilla/5.0", "17.58.1.0"),
        Activity("open", _at(700), "", "203.0.113.0"),
    ) == ["prefetching proxy", "no user agent"]


def test_gmails_proxy_fetches_when_the_person_opens():
    agent = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    assert _classify(Activity("open", _at(900), agent, "66.249.84.0")) == [""]


def test_scanners_are_known_by_agent_network_and_timing():
    assert _classify(
        Activity("click", _at(100), "python-requests/2.32", "203.0.113.0", url="https://s/a"),
        Activity("click", _at(200), PERSON, "40.93.7.0", url="https://s/b"),
        Activity("open", _at(4), PERSON, "203.0.113.0"),
    ) == ["too soon after sending", "scanner user agent", "machine network"]


def test_the_decoy_link_unmasks_every_click_of_its_burst():
    assert _classify(
        Activity("click", _at(500), PERSON, "203.0.113.0", url="https://s/a"),
        Activity("click", _at(500.5), PERSON, "203.0.113.0", is_decoy=True, url="https://t/"),
        Activity("click", _at(501), PERSON, "203.0.113.0", url="https://s/b"),
        Activity("click", _at(900), PERSON, "203.0.113.0", url="https://s/a"),
    ) == ["decoy link", "decoy link", "decoy link", ""]


def test_clicks_on_several_links_at_once_are_a_scanner():
    assert _classify(
        Activity("click", _at(500), PERSON, "203.0.113.0", url="https://s/a"),
        Activity("click", _at(501), PERSON, "203.0.113.0", url="https://s/b"),
        Activity("click", _at(501.5), PERSON, "203.0.113.0", url="https://s/b"),
        Activity("click", _at(900), PERSON, "203.0.113.0", url="https://s/a"),
    ) == ["burst of clicks", "burst of clicks", "burst of clicks", ""]


def test_links_in_html_and_text_go_through_the_tracker_unescaped_once():
    html = '<a class="x" href="https://s.example/?a=1&amp;b=2">Go</a> <a href="mailto:x@y">m</a>'
    assert html_links_track(html, lambda url: f"T[{url}]") == (
        '<a class="x" href="T[https://s.example/?a=1&amp;b=2]">Go</a> <a href="mailto:x@y">m</a>'
    )
    text = "See https://s.example/x, or (https://s.example/y?a=1). Done"
    assert text_links_track(text, lambda url: f"T[{url}]") == (
        "See T[https://s.example/x], or (T[https://s.example/y?a=1]). Done"
    )


def test_the_landing_address_carries_the_token_once():
    url = landing_url("https://s.example/p?cm_em=old&x=1#top", "1.2.v:sig")
    assert url == "https://s.example/p?x=1&cm_em=1.2.v%3Asig#top"
    assert landing_token(url) == "1.2.v:sig"
    assert landing_token("https://s.example/p?x=1") == ""
