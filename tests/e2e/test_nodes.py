"""Three delivery nodes behind nginx on loopback (D6): routing by client with consistent
hashing, by campaign for a heavy client, failover when a node dies, and no lost records.

Each node is a gunicorn process with its own spool and data directory, sharing the test run's
PostgreSQL and Redis; nginx runs with the configuration `manage.py nginx_config` renders. Which
node answered a query is read from the spools: every query carries a unique page address (u),
which its delivery record keeps.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from delivery.identity import visitor_id_issue
from segmentation.services import tables_build
from tests.factories import CampaignFactory, ClientFactory

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True)]

NGINX = "/usr/sbin/nginx"
NODES = 3
HEAVY_CAMPAIGNS = 10
STARTUP_SECONDS = 20


@dataclass
class Node:
    address: str
    directory: Path
    process: subprocess.Popen

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def delivery_urls(self) -> list[str]:
        """The page address of every delivery record in this node's spool (open and closed)."""
        urls = []
        for path in sorted((self.directory / "spool").glob("*/*.jsonl")):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if record["type"] == "delivery":
                    urls.append(record["url"])
        return urls


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(port: int, method: str, path: str, **params: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, f"{path}?{urlencode(params)}")
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own group, and whatever of the group is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=5)
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _ask_defaults(port: int, key: str) -> bool:
    return _request(port, "GET", "/d/v1/query", k=key, a="1")[0] == 200


def _wait(is_ready: Callable[[], bool], process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not is_ready():
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        assert process.poll() is None, f"{process.args} exited:\n{tail}"
        assert time.monotonic() < deadline, f"{process.args} not ready:\n{tail}"
        time.sleep(0.05)


def _node_env(directory: Path) -> dict[str, str]:
    database = settings.DATABASES["default"]
    password = quote(database["PASSWORD"] or "", safe="")
    inherited = {"DEBUG", "SPOOL_DIR", "TABLE_STORE_DIR", "DELIVERY_NODE_DIR", "STATIC_ROOT"}
    return {
        **{name: value for name, value in os.environ.items() if name not in inherited},
        # The test database, where the test's data is committed.
        "DATABASE_URL": (
            f"postgres://{database['USER']}:{password}@{database['HOST']}:{database['PORT']}"
            f"/{database['NAME']}"
        ),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
        "HTTPS": "0",
        "COREMETRICS_DATA_DIR": str(directory),
        "SPOOL_DIR": str(directory / "spool"),
        "DELIVERY_REFRESH_SECONDS": "0.2",
        "NODE_NAME": directory.name,
        "TRUST_X_FORWARDED_FOR": "1",
    }


@pytest.fixture
def shops():
    """Six clients with one campaign each, and a heavy client with ten campaigns, published."""
    clients = [ClientFactory() for _ in range(6)]
    for client in clients:
        CampaignFactory(client=client, placement__key="hero")
    heavy = ClientFactory(is_heavy=True)
    for number in range(HEAVY_CAMPAIGNS):
        CampaignFactory(client=heavy, placement__key=f"slot-{number}")
    for client in [*clients, heavy]:
        tables_build(client_id=client.pk)
    return clients, heavy


@pytest.fixture
def nodes(shops, tmp_path):
    assert connection.vendor == "postgresql" and settings.REDIS_URL, (
        "the nodes share the test run's PostgreSQL and Redis (scripts/services.sh)"
    )
    clients, heavy = shops
    started: list[Node] = []
    try:
        for number in range(NODES):
            directory = tmp_path / f"node-{number}"
            (directory / "static").mkdir(parents=True)
            address = f"127.0.0.1:{_free_port()}"
            with open(directory / "gunicorn.log", "wb") as log:
                process = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "gunicorn", "coremetrics.wsgi:application"),
                        *("--bind", address, "--workers", "1", "--graceful-timeout", "1"),
                    ],
                    cwd=settings.BASE_DIR,
                    env=_node_env(directory),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own process group: killing the node kills master and worker together.
                    start_new_session=True,
                )
            started.append(Node(address=address, directory=directory, process=process))
        keys = [client.public_key for client in [*clients, heavy]]
        for node in started:
            # a=1 (no consent) answers the defaults and records nothing.
            _wait(
                lambda node=node: all(_ask_defaults(node.port, key) for key in keys),
                node.process,
                node.directory / "gunicorn.log",
            )
        yield started
    finally:
        for node in started:
            _stop(node.process)


@pytest.fixture
def balancer(shops, nodes, tmp_path):
    """nginx in front of the nodes, with the configuration operators render; its port."""
    _, heavy = shops
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = _free_port()
    with open(prefix / "nginx.conf", "w") as conf:
        call_command(
            "nginx_config",
            *[f"--node={node.address}" for node in nodes],
            f"--listen=127.0.0.1:{port}",
            "--standalone",
            stdout=conf,
        )
    error_log = prefix / "error.log"
    process = subprocess.Popen(
        [
            *(NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")),
            *("-e", str(error_log), "-g", "daemon off;"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: _ask_defaults(port, heavy.public_key), process, error_log)
        yield port
    finally:
        _stop(process)


def _where(nodes: list[Node]) -> dict[str, int]:
    """Page address of each recorded query -> the index of the node that recorded it."""
    return {url: index for index, node in enumerate(nodes) for url in node.delivery_urls()}


def test_nodes_route_by_client_and_campaign_and_fail_over_without_losing_records(
    shops, nodes, balancer
):
    clients, heavy = shops
    regular = [(client.public_key, "hero") for client in clients]
    campaigns = [(heavy.public_key, f"slot-{number}") for number in range(HEAVY_CAMPAIGNS)]
    routes = regular + campaigns
    visitors = {client.public_key: [visitor_id_issue() for _ in range(3)] for client in clients}
    visitors[heavy.public_key] = [visitor_id_issue() for _ in range(3)]
    asked: dict[tuple[str, str], list[str]] = {route: [] for route in routes}
    statuses: list[int] = []

    def ask(phase: str, some: list[tuple[str, str]], rounds: int) -> None:
        # Interleaved, route after route, so that stickiness is no artefact of the order.
        for turn in range(rounds):
            for key, placement in some:
                url = f"https://shop.example/{phase}/{key}/{placement}/{turn}"
                visitor = visitors[key][turn % len(visitors[key])]
                query = {"k": key, "v": visitor, "p": placement, "u": url}
                statuses.append(_request(balancer, "GET", "/d/v1/query", **query)[0])
                asked[key, placement].append(url)

    def nodes_of(phase: str) -> dict[tuple[str, str], set[int]]:
        where = _where(nodes)
        return {
            route: {where.get(url, -1) for url in urls if f"/{phase}/" in url}
            for route, urls in asked.items()
        }

    # Given 30 queries of each client and 6 of each of the heavy client's campaigns.
    ask("before", regular, 30)
    ask("before", campaigns, 6)

    # Then each client, and each campaign of the heavy client, sticks to one node, and the
    # heavy client's campaigns spread over several.
    assert statuses == [200] * (30 * len(regular) + 6 * len(campaigns))
    before = nodes_of("before")
    assert {route: len(seen) for route, seen in before.items()} == {route: 1 for route in routes}
    node_of = {route: seen.pop() for route, seen in before.items()}
    assert set(node_of.values()) <= set(range(NODES))
    assert len({node_of[route] for route in campaigns}) > 1

    # When the node serving the most clients dies (SIGKILL: master and worker at once).
    victim = Counter(node_of[route] for route in regular).most_common(1)[0][0]
    os.killpg(nodes[victim].process.pid, signal.SIGKILL)
    nodes[victim].process.wait()
    moved = [route for route in routes if node_of[route] == victim]
    stayed = [route for route in routes if node_of[route] != victim]
    ask("after", routes, 10)
    for key in visitors:
        statuses.append(_request(balancer, "POST", "/d/v1/visitor", k=key)[0])
        statuses.append(_request(balancer, "GET", f"/t/v1/{key}.js")[0])

    # Then every request succeeds: the others answer for the dead node's clients and
    # campaigns (each again on one node), and consistent hashing moves nothing else.
    assert statuses == [200] * len(statuses)
    after = nodes_of("after")
    assert {route: len(seen) for route, seen in after.items()} == {route: 1 for route in routes}
    node_after = {route: seen.pop() for route, seen in after.items()}
    assert moved
    assert {node_after[route] for route in moved} <= set(range(NODES)) - {victim}
    assert {route: node_after[route] for route in stayed} == {
        route: node_of[route] for route in stayed
    }

    # And no record is lost or doubled: the dead node's spool keeps what it wrote.
    answered = sorted(url for urls in asked.values() for url in urls)
    recorded = sorted(url for node in nodes for url in node.delivery_urls())
    assert recorded == answered
    assert len(nodes[victim].delivery_urls()) == sum(len(asked[route]) - 10 for route in moved)
