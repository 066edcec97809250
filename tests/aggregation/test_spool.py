import fcntl
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

from aggregation import spool
from aggregation.spool import (
    SpoolWriter,
    file_seal,
    spool_append,
    spool_closed_files,
    spool_seal_open,
    spool_writer_reset,
)


def _lines(directory):
    return [
        line for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()
    ]


def _contents(directory):
    return [path.read_text() for path in sorted(directory.glob("*.jsonl"))]


@pytest.fixture
def root(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(value=1000.0)
    monkeypatch.setattr(
        spool, "time", SimpleNamespace(monotonic=lambda: now.value, time_ns=time.time_ns)
    )
    return now


def test_writer_creates_the_spool_directories(root):
    SpoolWriter(root, 1024, 60)

    assert sorted(path.name for path in root.iterdir()) == [
        "archive",
        "closed",
        "dead",
        "open",
        "quarantine",
        "seal-requests",
    ]


def test_append_writes_one_json_line_per_record(root):
    writer = SpoolWriter(root, 1024 * 1024, 3600)

    writer.append([{"id": 1, "url": "https://shop.example/ü"}, {"id": 2, "value": None}])
    writer.append([{"id": 3}])

    [path] = (root / "open").glob("*.jsonl")
    assert path.read_bytes() == (
        b'{"id":1,"url":"https://shop.example/\xc3\xbc"}\n{"id":2,"value":null}\n{"id":3}\n'
    )
    assert f"-{os.getpid()}-" in path.name
    assert list((root / "closed").iterdir()) == []


def test_append_of_no_records_writes_nothing(root):
    writer = SpoolWriter(root, 1024, 60)

    writer.append([])

    assert list((root / "open").iterdir()) == []


def test_writer_rotates_by_size(root):
    writer = SpoolWriter(root, 16, 3600)

    for number in range(5):
        writer.append([{"n": number}])

    assert _contents(root / "closed") == ['{"n":0}\n{"n":1}\n', '{"n":2}\n{"n":3}\n']
    assert _contents(root / "open") == ['{"n":4}\n']


def test_writer_rotates_by_age(root, clock):
    writer = SpoolWriter(root, 1024 * 1024, 60)

    writer.append([{"n": 0}])
    clock.value += 59.9
    writer.append([{"n": 1}])
    clock.value += 0.1
    writer.append([{"n": 2}])

    assert _contents(root / "closed") == ['{"n":0}\n{"n":1}\n']
    assert _contents(root / "open") == ['{"n":2}\n']


def test_writer_close_seals_its_file(root):
    writer = SpoolWriter(root, 1024, 60)
    writer.append([{"n": 0}])

    writer.close()

    assert _contents(root / "closed") == ['{"n":0}\n']
    assert list((root / "open").iterdir()) == []


def test_seal_open_moves_every_open_file_and_deletes_empty_ones(root):
    first, second = SpoolWriter(root, 1024, 60), SpoolWriter(root, 1024, 60)
    first.append([{"writer": 1}])
    second.append([{"writer": 2}])
    (root / "open" / "just-opened.jsonl").touch()

    sealed = spool_seal_open(root)

    assert sorted(path.read_text() for path in sealed) == ['{"writer":1}\n', '{"writer":2}\n']
    assert sorted(sealed) == spool_closed_files(root)
    assert list((root / "open").iterdir()) == []
    assert spool_seal_open(root) == []


def test_writer_keeps_writing_after_its_file_was_sealed(root):
    writer = SpoolWriter(root, 1024, 3600)
    writer.append([{"n": 0}])
    spool_seal_open(root)

    writer.append([{"n": 1}])
    writer.append([{"n": 2}])

    assert _contents(root / "closed") == ['{"n":0}\n']
    assert _contents(root / "open") == ['{"n":1}\n{"n":2}\n']
    spool_seal_open(root)
    assert _contents(root / "closed") == ['{"n":0}\n', '{"n":1}\n{"n":2}\n']


def test_spool_append_writes_under_spool_dir(settings):
    spool_append([{"n": 0}])
    spool_append([{"n": 1}])
    spool_writer_reset()

    assert _contents(settings.SPOOL_DIR / "closed") == ['{"n":0}\n{"n":1}\n']


def test_append_raises_when_the_disk_refuses(root, monkeypatch):
    writer = SpoolWriter(root, 1024, 3600)

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(spool.os, "write", disk_full)
        with pytest.raises(OSError) as raised:
            writer.append([{"n": 0}])

    assert raised.value.errno == 28
    assert _contents(root / "open") == [""]
    writer.append([{"n": 1}])
    assert _contents(root / "open") == ['{"n":1}\n']


def _count_ids(root):
    return Counter(json.loads(line)["id"] for line in _lines(root / "closed"))


def test_no_line_is_lost_while_threads_write_and_files_are_sealed(root):
    writer = SpoolWriter(root, 64 * 1024, 3600)

    def write(thread):
        for number in range(500):
            writer.append([{"id": f"{thread}-{number}"}])

    threads = [threading.Thread(target=write, args=(thread,)) for thread in range(4)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        spool_seal_open(root)
    for thread in threads:
        thread.join()
    writer.close()
    spool_seal_open(root)

    assert _count_ids(root) == Counter(
        f"{thread}-{number}" for thread in range(4) for number in range(500)
    )


def _write_from_a_process(process):
    for number in range(500):
        spool_append([{"id": f"{process}-{number}"}])


def test_no_line_is_lost_while_processes_write_and_files_are_sealed(settings):
    root = settings.SPOOL_DIR
    # The parent's writer exists before the fork: each child must open its own file.
    spool_append([{"id": "parent"}])
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_write_from_a_process, args=(process,)) for process in range(2)
    ]
    for process in processes:
        process.start()
    while any(process.is_alive() for process in processes):
        spool_seal_open(root)
    for process in processes:
        process.join()
    spool_writer_reset()
    spool_seal_open(root)

    assert [process.exitcode for process in processes] == [0, 0]
    assert _count_ids(root) == Counter(
        ["parent", *(f"{process}-{number}" for process in range(2) for number in range(500))]
    )


def test_no_line_is_lost_when_a_new_file_is_sealed_before_the_writer_locks_it(root, monkeypatch):
    """Replays the race: before each of the writer's first two locks of a new file, a sealer
    finds the file without an owner (and, empty, deletes it)."""
    writer = SpoolWriter(root, 1024, 3600)
    lock = fcntl.flock
    state = SimpleNamespace(seals_left=2)

    def flock_after_a_seal(fd, operation):
        # The sealer's own (non-blocking) locks pass straight through.
        if operation == fcntl.LOCK_EX and state.seals_left:
            state.seals_left -= 1
            for path in (root / "open").glob("*.jsonl"):
                assert file_seal(path, root / "closed") == (True, None)
        lock(fd, operation)

    with monkeypatch.context() as patch:
        patch.setattr(spool.fcntl, "flock", flock_after_a_seal)
        writer.append([{"id": "only"}])
    writer.close()

    assert state.seals_left == 0
    assert _lines(root / "closed") == ['{"id":"only"}']


def _write_and_die(root):
    writer = SpoolWriter(root, 1 << 20, 3600)
    writer.append([{"id": "from a process that died"}])
    os._exit(0)  # no close: the file stays in open/, its lock gone with the process


def test_the_file_of_a_writer_that_died_is_sealed_by_anyone(root):
    process = multiprocessing.get_context("fork").Process(target=_write_and_die, args=(root,))
    process.start()
    process.join()

    sealed = spool_seal_open(root)

    assert [path.read_text() for path in sealed] == ['{"id":"from a process that died"}\n']
    assert list((root / "open").iterdir()) == []


def _write_until_told(root, ready, done):
    writer = SpoolWriter(root, 1 << 20, 3600)
    writer.append([{"id": "live"}])
    ready.set()
    done.wait(30)  # idle, alive: only its watcher can answer a seal request


def test_a_live_idle_writer_in_another_process_seals_its_file_when_asked(root):
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()
    process = context.Process(target=_write_until_told, args=(root, ready, done))
    process.start()
    try:
        assert ready.wait(30)
        sealed = spool_seal_open(root)
    finally:
        done.set()
        process.join()

    assert [path.read_text() for path in sealed] == ['{"id":"live"}\n']


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_request_counter_neither_kills_writers_nor_loses_their_files(root, damage):
    context = multiprocessing.get_context("fork")
    ready, done = context.Event(), context.Event()
    process = context.Process(target=_write_until_told, args=(root, ready, done))
    process.start()
    try:
        assert ready.wait(30)
        counter = root / "seal-requests"
        if damage == "truncated":
            os.truncate(counter, 0)
        else:
            counter.unlink()
        sealed = spool_seal_open(root)
    finally:
        done.set()
        process.join()

    assert process.exitcode == 0
    assert [path.read_text() for path in sealed] == ['{"id":"live"}\n']
