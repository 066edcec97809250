import json
import logging
import threading
import time

import pytest

from delivery.stores import FileTableStore, RedisTableStore, file_create
from delivery.tablefile import Table, TableFormatError, table_decode, table_encode
from delivery.tables import ClientView, LocalTables, PlacementView

PUBLIC_KEY = "pk-shop"
CAMPAIGN_ID = 7
VISITORS = [f"visitor-{number:03d}" for number in range(200)]


def _answer(content_id):
    return {
        "id": content_id,
        "name": f"Banner {content_id}",
        "type": "image",
        "url": f"https://cdn.example/banner-{content_id}.png",
        "click_url": "https://shop.example/offer",
        "html": "",
        "alt": "",
    }


DEFAULT = _answer(1000)


def _dumps(data):
    # As delivery.services writes every blob.
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


TAG = {"key": PUBLIC_KEY, "consent": "implied", "cookieDomain": "", "timeout": 1500}


def _manifest(version, *, campaign_id=CAMPAIGN_ID):
    return _dumps(
        {
            "client_id": 3,
            "public_key": PUBLIC_KEY,
            "origins": ["https://shop.example", "https://www.shop.example"],
            "tag": TAG,
            "placements": {
                "hero": {
                    "campaign_id": campaign_id,
                    "campaign": "spring",
                    "default": DEFAULT,
                    "version": version,
                }
            },
        }
    )


def _table(version, visitors=VISITORS):
    """A table whose every visitor gets the content numbered like the version."""
    return table_encode(
        campaign_id=CAMPAIGN_ID,
        version=version,
        contents={1000: DEFAULT, version: _answer(version)},
        visitors=dict.fromkeys(visitors, version),
    )


def _publish(store, version):
    store.table_put(CAMPAIGN_ID, version, _table(version))
    store.manifest_put(PUBLIC_KEY, _manifest(version))


def _served(view):
    return view.placements["hero"].table.version


@pytest.fixture(params=["file", "redis"])
def store(request, settings, tmp_path):
    if request.param == "file":
        return FileTableStore(tmp_path / "store")
    return RedisTableStore(settings.REDIS_URL)


class UnreachableStore:
    """The store behind a network that can fail, as a delivery node sees it; it notes which
    threads called it."""

    def __init__(self, store):
        self.store = store
        self.is_down = False
        self.callers = set()

    def __getattr__(self, name):
        method = getattr(self.store, name)

        def call(*args):
            self.callers.add(threading.current_thread().name)
            if self.is_down:
                raise ConnectionError("table store unreachable")
            return method(*args)

        return call


@pytest.fixture
def started():
    """LocalTables made here whose refresh threads are stopped after the test."""
    made = []

    def make(*args):
        local = LocalTables(*args)
        made.append(local)
        return local

    yield make
    for local in made:
        local.stop()


def _eventually(check, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


def test_store_answers_none_for_what_was_never_put(store):
    assert store.manifest_get(PUBLIC_KEY) is None
    assert store.manifests_all() == {}
    assert store.table_get(CAMPAIGN_ID, 1) is None
    assert store.table_exists(CAMPAIGN_ID, 1) is False


def test_store_keeps_manifests_by_public_key_and_moves_the_version_on_each_write(store):
    versions = [store.manifests_version()]
    store.manifest_put(PUBLIC_KEY, b'{"v":1}')
    versions.append(store.manifests_version())
    store.manifest_put("pk-other", b'{"v":9}')
    versions.append(store.manifests_version())
    store.manifest_put(PUBLIC_KEY, b'{"v":2}')
    versions.append(store.manifests_version())

    assert store.manifest_get(PUBLIC_KEY) == b'{"v":2}'
    assert store.manifests_all() == {PUBLIC_KEY: b'{"v":2}', "pk-other": b'{"v":9}'}
    assert len(set(versions)) == 4
    assert store.manifests_version() == versions[-1]


def test_store_keeps_tables_by_campaign_and_version(store):
    store.table_put(CAMPAIGN_ID, 1, b"one")
    store.table_put(CAMPAIGN_ID, 2, b"two")
    store.table_put(8, 1, b"other")

    assert store.table_get(CAMPAIGN_ID, 1) == b"one"
    assert store.table_get(CAMPAIGN_ID, 2) == b"two"
    assert store.table_get(8, 1) == b"other"
    assert store.table_exists(8, 1) is True


def test_store_deletes_one_table_version(store):
    store.table_put(CAMPAIGN_ID, 1, b"one")
    store.table_put(CAMPAIGN_ID, 2, b"two")

    store.table_delete(CAMPAIGN_ID, 1)
    store.table_delete(CAMPAIGN_ID, 5)

    assert store.table_get(CAMPAIGN_ID, 1) is None
    assert store.table_get(CAMPAIGN_ID, 2) == b"two"


def test_a_table_round_trips_through_its_stored_form():
    visitors = {"bob": 2, "ann": 1, "a-much-longer-visitor-id.0123456789": 0, "zed": 4_000_000_000}
    contents = {1: _answer(1), 2: _answer(2), 0: None}

    table = table_decode(
        table_encode(campaign_id=7, version=3, contents=contents, visitors=visitors)
    )

    assert (table.campaign_id, table.version, table.contents) == (7, 3, contents)
    assert table.visitors.to_dict() == visitors
    assert [table.visitors.get(v) for v in ["ann", "bob", "zed", "an", "annn", "", "b" * 99]] == [
        1,
        2,
        4_000_000_000,
        None,
        None,
        None,
        None,
    ]
    assert "ann" in table.visitors and "anne" not in table.visitors
    assert len(table.visitors) == 4


def test_an_empty_table_answers_nothing():
    table = table_decode(table_encode(campaign_id=7, version=1, contents={}, visitors={}))

    assert (len(table.visitors), table.visitors.get("ann")) == (0, None)


def test_a_truncated_or_foreign_blob_is_refused():
    data = _table(1)

    for blob in [data[:-1], b'{"visitors": {}}', b"CMT1" + b"\xff" * 8, b""]:
        with pytest.raises(TableFormatError):
            table_decode(blob)


def test_local_tables_loads_manifest_and_table(store):
    store.table_put(CAMPAIGN_ID, 1, _table(1, visitors=["ann", "bob"]))
    store.manifest_put(PUBLIC_KEY, _manifest(1))

    view = LocalTables(store, 0).client(PUBLIC_KEY)

    assert view == ClientView(
        client_id=3,
        public_key=PUBLIC_KEY,
        origins=frozenset({"https://shop.example", "https://www.shop.example"}),
        tag=TAG,
        placements={
            "hero": PlacementView(
                key="hero",
                campaign_id=CAMPAIGN_ID,
                campaign_key="spring",
                default=DEFAULT,
                table=Table(
                    campaign_id=CAMPAIGN_ID,
                    version=1,
                    contents={1000: DEFAULT, 1: _answer(1)},
                    visitors={"ann": 1, "bob": 1},
                ),
            )
        },
    )


def test_local_tables_serves_a_placement_without_table(store):
    store.manifest_put(PUBLIC_KEY, _manifest(None))

    view = LocalTables(store, 0).client(PUBLIC_KEY)

    assert view.placements["hero"].table is None
    assert view.placements["hero"].default == DEFAULT


def test_local_tables_answers_none_for_an_unpublished_client(store):
    assert LocalTables(store, 0).client(PUBLIC_KEY) is None


def test_local_tables_serves_a_new_version_on_the_next_call(store):
    local = LocalTables(store, 0)
    _publish(store, 1)
    assert _served(local.client(PUBLIC_KEY)) == 1

    _publish(store, 2)

    assert _served(local.client(PUBLIC_KEY)) == 2


def test_a_node_process_follows_publishes_in_the_background_and_requests_never_wait(
    store, tmp_path, started
):
    watched = UnreachableStore(store)
    _publish(store, 1)
    local = started(watched, 0.02, tmp_path / "node")
    _eventually(lambda: local.client(PUBLIC_KEY) is not None)
    assert _served(local.client(PUBLIC_KEY)) == 1

    _publish(store, 2)
    _eventually(lambda: _served(local.client(PUBLIC_KEY)) == 2)

    assert watched.callers == {"delivery-tables"}


def test_a_node_keeps_serving_while_the_store_is_unreachable(store, tmp_path, caplog, started):
    caplog.set_level(logging.WARNING, logger="delivery.tables")
    unreachable = UnreachableStore(store)
    local = started(unreachable, 0.01, tmp_path / "node")
    _publish(store, 1)
    _eventually(lambda: local.client(PUBLIC_KEY) is not None)
    held = local.client(PUBLIC_KEY)

    unreachable.is_down = True
    _publish(store, 2)
    time.sleep(0.2)
    during = [local.client(PUBLIC_KEY) for _ in range(3)]

    assert during == [held] * 3
    # Once per minute of outage, not once per check.
    assert [record.getMessage() for record in caplog.records] == [
        "table store unreachable; serving the copy held"
    ]
    unreachable.is_down = False
    _eventually(lambda: _served(local.client(PUBLIC_KEY)) == 2)


def test_a_restarted_node_serves_its_local_copy_at_once_even_without_the_store(
    store, tmp_path, started
):
    _publish(store, 1)
    first = LocalTables(store, 0, tmp_path / "node")
    assert _served(first.client(PUBLIC_KEY)) == 1

    unreachable = UnreachableStore(store)
    unreachable.is_down = True
    restarted = started(unreachable, 60, tmp_path / "node")
    view = restarted.client(PUBLIC_KEY)

    table = view.placements["hero"].table
    assert (table.version, table.contents[table.visitors[VISITORS[0]]]) == (1, _answer(1))
    assert sorted(path.name for path in (tmp_path / "node" / "tables").iterdir()) == ["7-1.cmt"]


def test_a_node_maps_its_table_file_instead_of_holding_a_copy(store, tmp_path):
    _publish(store, 1)

    table = LocalTables(store, 0, tmp_path / "node").client(PUBLIC_KEY).placements["hero"].table

    assert type(table.visitors._ids.base.obj).__name__ == "mmap"


def test_local_tables_without_a_copy_answers_none_while_redis_is_unreachable():
    local = LocalTables(RedisTableStore("redis://127.0.0.1:1/0"), 0)

    assert local.client(PUBLIC_KEY) is None
    assert local.client(PUBLIC_KEY) is None


def test_local_tables_keeps_the_previous_view_when_a_named_table_is_missing(store):
    local = LocalTables(store, 0)
    _publish(store, 1)
    local.client(PUBLIC_KEY)

    store.manifest_put(PUBLIC_KEY, _manifest(2))

    assert _served(local.client(PUBLIC_KEY)) == 1
    assert _served(local.client(PUBLIC_KEY)) == 1

    store.table_put(CAMPAIGN_ID, 2, _table(2))

    assert _served(local.client(PUBLIC_KEY)) == 2


def test_local_tables_keeps_the_previous_view_when_the_manifest_is_unreadable(store):
    local = LocalTables(store, 0)
    _publish(store, 1)
    held = local.client(PUBLIC_KEY)

    store.manifest_put(PUBLIC_KEY, b'{"client_id": 3, "placem')

    assert local.client(PUBLIC_KEY) is held


def test_local_tables_first_load_of_a_manifest_naming_a_missing_table_serves_default(store):
    store.manifest_put(PUBLIC_KEY, _manifest(1))

    view = LocalTables(store, 0).client(PUBLIC_KEY)

    [placement] = view.placements.values()
    assert (placement.table, placement.default) == (None, DEFAULT)


def test_local_tables_reuses_a_held_table_when_only_the_manifest_changes(store):
    local = LocalTables(store, 0)
    _publish(store, 1)
    table = local.client(PUBLIC_KEY).placements["hero"].table

    store.manifest_put(PUBLIC_KEY, _manifest(1).replace(b"spring", b"summer"))
    view = local.client(PUBLIC_KEY)

    assert view.placements["hero"].campaign_key == "summer"
    assert view.placements["hero"].table is table


def test_readers_never_see_a_mix_of_two_versions(store):
    """A publisher writes versions 2..50 while fresh readers look: each view is one version."""
    _publish(store, 1)
    failures = []

    def publish():
        try:
            for version in range(2, 51):
                _publish(store, version)
        except Exception as error:
            failures.append(error)

    def read():
        view = LocalTables(store, 0).client(PUBLIC_KEY)
        table = view.placements["hero"].table
        answers = {table.contents[table.visitors[visitor]]["id"] for visitor in VISITORS}
        assert answers == {table.version}
        assert len(table.visitors) == len(VISITORS)
        seen.append(table.version)

    publisher = threading.Thread(target=publish)
    publisher.start()
    seen = []
    while publisher.is_alive():
        read()
    publisher.join()
    read()

    assert failures == []
    assert seen == sorted(seen)
    assert seen[-1] == 50


class FlakyTables(UnreachableStore):
    """Manifests answer, but the next table read fails once (Redis dropping mid-sync)."""

    def __init__(self, store):
        super().__init__(store)
        self.table_failures = 0

    def __getattr__(self, name):
        if name == "table_get" and self.table_failures:
            self.table_failures -= 1
            raise ConnectionError("dropped")
        return super().__getattr__(name)


def test_a_publish_whose_table_failed_to_load_is_taken_in_at_the_next_sync(
    store, tmp_path, started
):
    flaky = FlakyTables(store)
    local = started(flaky, 60, tmp_path / "node")
    _publish(store, 1)
    local.sync()
    assert _served(local.client(PUBLIC_KEY)) == 1

    _publish(store, 2)
    flaky.table_failures = 1
    local.sync()
    held = _served(local.client(PUBLIC_KEY))
    local.sync()

    assert (held, _served(local.client(PUBLIC_KEY))) == (1, 2)


def test_an_emptied_store_does_not_unpublish_every_client(store, tmp_path, caplog, started):
    local = started(store, 60, tmp_path / "node")
    _publish(store, 1)
    local.sync()
    emptied = UnreachableStore(store)
    emptied.manifests_version = lambda: "restarted empty"
    emptied.manifests_all = lambda: {}
    local._store = emptied

    local.sync()

    assert _served(local.client(PUBLIC_KEY)) == 1
    assert "table store holds no manifests; serving the copy held" in caplog.text
    assert (tmp_path / "node" / "manifests" / f"{PUBLIC_KEY}.json").exists()


def test_several_processes_of_a_node_fetching_one_table_keep_the_first_file(tmp_path):
    path = tmp_path / "node" / "tables" / "7-1.cmt"

    file_create(path, b"first")
    inode = path.stat().st_ino
    file_create(path, b"second")

    assert (path.read_bytes(), path.stat().st_ino) == (b"first", inode)
    assert sorted(p.name for p in path.parent.iterdir()) == ["7-1.cmt"]
