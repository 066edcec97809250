"""Delivery benchmark (issue 9): our query endpoint against the floor under it, on two servers.

    make bench-delivery              # the whole run (about 8 minutes), services started
    .venv/bin/python bench/delivery.py --visitors 100000 --duration 3 --servers granian
                                     # a quicker look, with DATABASE_URL and REDIS_URL set
    .venv/bin/python bench/delivery.py --visitors 100000 --in-process 20000 [--profile]
                                     # no server: the handler's own time per query

Setup: one client with one campaign on one placement (a default content and three others) and
a published lookup table of --visitors server-issued visitor ids (stored with `table_store`,
published with `table_publish`, so the manifest names it as a build would); the same visitors as
delivery.Visitor rows holding their content id (variant d); the visitors the load asks for in
a Redis hash (variant b). The load cycles through PATHS request paths: visitors of the table,
and a tenth unknown ones (valid ids the table does not name: the default answer).

Variants, each served by each server with the same worker settings (SERVERS):
  a  bench.apps:constant            a raw WSGI app returning a constant 200-byte JSON body
  b  bench.apps:redis_answer        a raw WSGI app doing one Redis HGET of the answer
  c  coremetrics.wsgi:application   GET /d/v1/query?k=<client key>&v=<visitor>&p=<placement>
  d  bench.wsgi:application         a plain Django view doing one ORM lookup of the answer,
                                    through the project's whole MIDDLEWARE (bench/urls.py)
Per server, every variant is served at once: warm-up rounds at the highest concurrency until
each rate settles, then wrk at concurrency 1, 16 and 64 for --duration seconds each, the
variants taking turns; at 16 in REPORTED_ROUNDS rounds, whose median is reported (every round
is printed). Errors are wrk's socket errors (connect, read, write, timeout) plus responses
other than 2xx/3xx.

Output: a table (server, variant, concurrency, requests/s, p50, p99, errors), then one JSON
line for the production server (production_server_choose) at concurrency 16: rps, p50_ms,
p99_ms keyed by variant letter (medians of the rounds), errors (all its runs at 16),
ratio_c_over_a, ratio_c_over_d.

--in-process CALLS: no server and no wrk. Variant (c)'s application is called in this process
CALLS times per round over the same request paths, IN_PROCESS_ROUNDS rounds after one warm-up
round; the output is one JSON line: us_per_query (the median round) and every round's figure.
With --profile, cProfile's busiest functions over one more round instead.
Runs in a database of its own (coremetrics_bench_delivery, created anew and dropped at the end)
and Redis database 6 (flushed before and after), so the test suite's databases are left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
DATABASE = "coremetrics_bench_delivery"
# 5 is bench/tables.py's; table keys are named by campaign id, which a new database reuses.
REDIS_DB = 6
PLACEMENT = "home"
PATHS = 10_000
UNKNOWN_SHARE = 0.1
CONCURRENCIES = (1, 16, 64)
# The JSON line's concurrency, measured in this many rounds (the variants taking turns); the
# line gives each figure's median over them: one run's p99 moves by several times on this VM.
REPORTED_CONCURRENCY = 16
REPORTED_ROUNDS = 3
# How long a server may take to answer as the table says once it listens.
READY_SECONDS = 60
WARMUP_SECONDS = 2
WARMUP_ROUNDS = 5
# Warm-up ends when a round's rate is within this share of the previous round's.
WARMUP_SETTLED = 0.2
COPY_ROWS = 50_000
IN_PROCESS_ROUNDS = 7

# Two workers for two cores, one thread each (docs/deployment.md's production command): the
# delivery answer never waits on the network, and more threads per worker only contend for
# the GIL (measured: 18,200 requests/s with 4 threads against 26,100 with 1 under granian).
WORKERS = 2
# BENCH_THREADS and BENCH_VARIANTS (e.g. "ac") narrow a run down while tuning.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
SERVERS = {
    "granian": [
        str(VENV_BIN / "granian"), "--interface", "wsgi", "--workers", str(WORKERS),
        "--blocking-threads", str(THREADS), "--runtime-threads", "1", "--no-ws",
        "--log-level", "warning", "--host", "127.0.0.1", "--port", "{port}", "{app}",
    ],
    "gunicorn": [
        str(VENV_BIN / "gunicorn"), "--worker-class", "gthread", "--workers", str(WORKERS),
        "--threads", str(THREADS), "--log-level", "warning", "--bind", "127.0.0.1:{port}",
        "{app}",
    ],
}  # fmt: skip
# Ties go to granian (the issue's obvious candidate): a server counts as the fastest when its
# (a) rate at concurrency 16 is within this share of the best one.
PREFERRED_SERVER = "granian"
CLOSE_SHARE = 0.9
VARIANTS = {
    "a": ("bench.apps:constant", "/d/v1/query"),
    "b": ("bench.apps:redis_answer", "/d/v1/query"),
    "c": ("coremetrics.wsgi:application", "/d/v1/query"),
    "d": ("bench.wsgi:application", "/bench/answer"),
}

# Each wrk thread walks the list of requests from its own starting point.
WRK_SCRIPT = """
local requests = {}
local index = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("GET", line)
  end
  index = ((id or 1) - 1) * 997 % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end
"""


@dataclass(frozen=True)
class Run:
    server: str
    variant: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Setup:
    # Query strings cycled by the load; expected content id per visitor (None: the default).
    queries: list[str]
    expected: dict[str, int | None]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument(
        "--in-process", type=int, default=0, metavar="CALLS", help="no server: CALLS per round"
    )
    parser.add_argument("--profile", action="store_true", help="with --in-process: cProfile")
    args = parser.parse_args()
    servers = args.servers.split(",")
    if unknown := set(servers) - set(SERVERS):
        sys.exit(f"unknown servers: {sorted(unknown)}")
    if shutil.which("wrk") is None and not args.in_process:
        sys.exit("wrk not found (scripts/bootstrap.sh --system installs it)")
    # SIGTERM and SIGHUP end the run like Ctrl-C: the servers are stopped on the way out.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _interrupt)

    work_dir = Path(tempfile.mkdtemp(prefix="coremetrics-bench-"))
    admin_url = os.environ["DATABASE_URL"]
    os.environ.update(
        {
            "DATABASE_URL": _bench_database(admin_url),
            "REDIS_URL": _bench_redis(os.environ["REDIS_URL"]),
            "COREMETRICS_DATA_DIR": str(work_dir / "data"),
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret-key"),
            "HTTPS": "0",
            "DJANGO_SETTINGS_MODULE": "coremetrics.settings",
        }
    )
    try:
        setup = _setup(args.visitors)
        if args.in_process:
            _in_process(setup, args.in_process, args.profile)
            return
        results = _measure(servers, setup, work_dir, args.duration)
    finally:
        _cleanup(admin_url, work_dir)
    _report(results)


def _interrupt(number: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(number).name)


def _setup(total: int) -> Setup:
    """The client, its published table of `total` visitors, the Visitor rows and Redis hash."""
    sys.path.insert(0, str(ROOT))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True, env=os.environ
    )
    import django

    django.setup()
    import orjson
    import redis
    from django.db import connection

    from bench.apps import ANSWERS_KEY, DEFAULT_ANSWER_KEY
    from campaigns.selectors import content_answer
    from delivery.identity import visitor_id_issue
    from delivery.models import Visitor
    from delivery.services import manifest_publish, table_store
    from segmentation.models import TableVersion
    from segmentation.services import table_publish
    from tests.factories import CampaignFactory, ClientFactory, ContentFactory, PlacementFactory

    started = time.perf_counter()
    client = ClientFactory(name="Bench", slug="bench")
    campaign = CampaignFactory(
        client=client, key="bench", placement=PlacementFactory(client=client, key=PLACEMENT)
    )
    shown = [ContentFactory(client=client, name=f"Bench banner {n}") for n in range(3)]
    contents = {
        content.pk: content_answer(content) for content in [campaign.default_content, *shown]
    }
    rng = random.Random(20261122)
    visitors = {visitor_id_issue(): rng.choice(shown).pk for _ in range(total)}
    issued_seconds = time.perf_counter() - started

    started = time.perf_counter()
    table_store(campaign_id=campaign.pk, version=1, contents=contents, visitors=visitors)
    # The row a build would have written; publishing it writes the manifest that names it.
    version = TableVersion.objects.create(
        client=client,
        campaign=campaign,
        number=1,
        status=TableVersion.Status.READY,
        visitor_count=len(visitors),
        finished_at=datetime.now(UTC),
    )
    table_publish(version=version)
    manifest = manifest_publish(client_id=client.pk)
    if manifest["placements"][PLACEMENT]["version"] != 1:
        sys.exit(f"the manifest does not name the table: {manifest['placements']}")
    store_seconds = time.perf_counter() - started

    started = time.perf_counter()
    _visitors_copy(Visitor._meta.db_table, client.pk, visitors)
    copy_seconds = time.perf_counter() - started

    known = rng.sample(list(visitors), PATHS - int(PATHS * UNKNOWN_SHARE))
    unknown = [visitor_id_issue() for _ in range(PATHS - len(known))]
    order = known + unknown
    rng.shuffle(order)
    expected = {visitor: visitors.get(visitor) for visitor in order}
    default = content_answer(campaign.default_content)
    answers = redis.Redis.from_url(os.environ["REDIS_URL"])
    answers.set(DEFAULT_ANSWER_KEY, orjson.dumps({"placement": PLACEMENT, "content": default}))
    for first in range(0, len(known), 1000):
        answers.hset(
            ANSWERS_KEY,
            mapping={
                visitor: orjson.dumps(
                    {"placement": PLACEMENT, "content": contents[visitors[visitor]]}
                )
                for visitor in known[first : first + 1000]
            },
        )
    answers.close()
    connection.close()
    print(
        f"setup: {total} visitor ids issued in {issued_seconds:.1f} s; table stored and "
        f"published in {store_seconds:.1f} s; Visitor rows copied in {copy_seconds:.1f} s; "
        f"{len(known)} known and {len(unknown)} unknown visitors in the load",
        file=sys.stderr,
    )
    queries = [urlencode({"k": client.public_key, "v": v, "p": PLACEMENT}) for v in order]
    return Setup(queries=queries, expected=expected)


def _visitors_copy(table: str, client_id: int, visitors: dict[str, int]) -> None:
    """COPY one Visitor row per visitor, its content id in cookie_data (variant d's answer)."""
    from django.db import connection

    moment = datetime.now(UTC).isoformat()
    copy = (
        f"COPY {table} (client_id, visitor_id, cookie_data, first_seen_at, last_seen_at) FROM STDIN"
    )
    items = list(visitors.items())
    with connection.cursor() as cursor:
        for first in range(0, len(items), COPY_ROWS):
            buffer = io.StringIO()
            for visitor, content_id in items[first : first + COPY_ROWS]:
                buffer.write(
                    f'{client_id}\t{visitor}\t{{"content": {content_id}}}\t{moment}\t{moment}\n'
                )
            buffer.seek(0)
            cursor.copy_expert(copy, buffer)
        # Statistics and the visibility map now, so that no measured run pays for them.
        cursor.execute(f"VACUUM ANALYZE {table}")


def _in_process(setup: Setup, calls: int, profile: bool) -> None:
    """Variant (c) called in this process: the time our handler takes per query, which wrk's
    rates mix with the server's own and the load generator's."""
    from coremetrics.wsgi import application

    path = VARIANTS["c"][1]
    environs = [
        {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_USER_AGENT": "wrk",
            "wsgi.url_scheme": "http",
        }
        for query in setup.queries
    ]
    statuses = set()

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        statuses.add(status)

    def source(environ: dict) -> str:
        body = b"".join(application(environ, start_response))
        return json.loads(body)["placements"][0]["source"]

    known = next(
        environ for environ in environs if setup.expected[_visitor(environ["QUERY_STRING"])]
    )
    deadline = time.monotonic() + READY_SECONDS
    # The tables arrive with the refresh thread, as in a server's worker.
    while source(known) != "table":
        if time.monotonic() > deadline:
            sys.exit("the published table did not load")
        time.sleep(0.2)

    def round_seconds(count: int) -> float:
        started = time.perf_counter()
        for index in range(count):
            application(environs[index % len(environs)], start_response)
        return time.perf_counter() - started

    # Every visitor id checked once and the spool file opened, as in a warmed-up worker.
    round_seconds(len(environs))
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(round_seconds, calls)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    else:
        figures = [round_seconds(calls) / calls * 1e6 for _ in range(IN_PROCESS_ROUNDS)]
        print(
            json.dumps(
                {
                    "us_per_query": round(sorted(figures)[len(figures) // 2], 2),
                    "rounds": [round(figure, 2) for figure in figures],
                }
            )
        )
    if statuses != {"200 OK"}:
        sys.exit(f"answered with {sorted(statuses)}")


def _measure(servers: list[str], setup: Setup, work_dir: Path, duration: int) -> list[Run]:
    script = work_dir / "paths.lua"
    script.write_text(WRK_SCRIPT)
    paths_files = {}
    for prefix in {prefix for _, prefix in VARIANTS.values()}:
        paths_files[prefix] = work_dir / f"paths{prefix.replace('/', '-')}.txt"
        paths_files[prefix].write_text("".join(f"{prefix}?{q}\n" for q in setup.queries))
    print("Servers (the same settings for every variant):")
    for server in servers:
        command = " ".join(SERVERS[server]).format(port="<free port>", app="<variant's app>")
        print(f"  {server}: {command.replace(str(VENV_BIN) + '/', '')}")
    print(
        f"Load: wrk --latency, threads min(concurrency, 2), {duration} s per run after warm-up "
        f"rounds of {WARMUP_SECONDS} s at concurrency {max(CONCURRENCIES)}; "
        f"{len(setup.queries)} request paths cycled",
        flush=True,
    )
    results = []
    print(HEADER, file=sys.stderr)
    letters = [letter for letter in VARIANTS if letter in os.environ.get("BENCH_VARIANTS", "abcd")]
    for server in servers:
        with contextlib.ExitStack() as serving:
            # Every variant served at once (idle ones take no CPU), so that the rounds at the
            # reported concurrency can take turns: a slow minute of the VM hits them all.
            ports = {}
            for letter in letters:
                app, prefix = VARIANTS[letter]
                ports[letter] = serving.enter_context(_serving(server, app, work_dir))
                _answer_check(letter, ports[letter], prefix, setup)
                _warm_up(ports[letter], script, paths_files[prefix])
            rounds: dict[tuple[str, int], list[dict]] = {}
            for concurrency in CONCURRENCIES:
                count = REPORTED_ROUNDS if concurrency == REPORTED_CONCURRENCY else 1
                for number in range(1, count + 1):
                    for letter in letters:
                        paths = paths_files[VARIANTS[letter][1]]
                        figures = _wrk(ports[letter], script, paths, concurrency, duration)
                        rounds.setdefault((letter, concurrency), []).append(figures)
                        run = Run(server, letter, concurrency, **figures)
                        note = f"  (round {number} of {count})" if count > 1 else ""
                        print(_row(run) + note, file=sys.stderr, flush=True)
        for (letter, concurrency), measured in rounds.items():
            results.append(Run(server, letter, concurrency, **_median(measured)))
    return results


def _median(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds; errors added up."""
    return {
        "rps": statistics.median(figures["rps"] for figures in rounds),
        "p50_ms": statistics.median(figures["p50_ms"] for figures in rounds),
        "p99_ms": statistics.median(figures["p99_ms"] for figures in rounds),
        "errors": sum(figures["errors"] for figures in rounds),
    }


@contextlib.contextmanager
def _serving(server: str, app: str, work_dir: Path) -> Iterator[int]:
    """Start `app` under `server` on a free loopback port; stop it (its process group) after."""
    port = _free_port()
    command = [part.format(port=port, app=app) for part in SERVERS[server]]
    log_path = work_dir / f"{server}-{app.replace(':', '-')}.log"
    with log_path.open("wb") as log:
        # A session of its own: Ctrl-C reaches this script, which stops the whole group.
        process = subprocess.Popen(
            command, cwd=ROOT, env=os.environ, stdout=log, stderr=log, start_new_session=True
        )
    try:
        _wait_for(port, process)
        yield port
    except (Exception, SystemExit):
        log_tail = log_path.read_text(errors="replace")[-3000:]
        print(f"{server} serving {app}, its log:\n{log_tail}", file=sys.stderr)
        raise
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _answer_check(letter: str, port: int, prefix: str, setup: Setup) -> None:
    """A known and an unknown visitor answered as the table says, before any load; waits up to
    READY_SECONDS for it (delivery loads the published tables in the background at start)."""
    known = next(query for query in setup.queries if setup.expected[_visitor(query)])
    unknown = next(query for query in setup.queries if not setup.expected[_visitor(query)])
    deadline = time.monotonic() + READY_SECONDS
    for query in (known, unknown):
        expected = setup.expected[_visitor(query)]
        while problem := _answer_problem(letter, port, f"{prefix}?{query}", expected):
            if time.monotonic() > deadline:
                sys.exit(f"variant {letter}: {problem}")
            time.sleep(0.2)


def _answer_problem(letter: str, port: int, path: str, expected: int | None) -> str | None:
    """What is wrong with the answer to `path` (expected: the table's content id, None for a
    visitor it does not name), or None."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        return f"{response.status} {body[:300]!r}"
    if letter == "a":
        return None
    data = json.loads(body)
    answer = data["placements"][0] if letter == "c" else data
    if letter == "c" and answer["source"] != ("table" if expected else "default"):
        return f"answered from {answer['source']}: {body[:300]!r}"
    if expected is not None and answer["content"]["id"] != expected:
        return f"answered content {answer['content']['id']}, the table says {expected}"
    return None


def _visitor(query: str) -> str:
    return re.search(r"(?:^|&)v=([^&]+)", query).group(1)


def _warm_up(port: int, script: Path, paths: Path) -> None:
    """Rounds at the highest concurrency until the rate settles without errors (each worker
    loads the tables, opens its connections and builds the URL resolver when it starts or on
    its first requests)."""
    previous = 0.0
    for _ in range(WARMUP_ROUNDS):
        figures = _wrk(port, script, paths, max(CONCURRENCIES), WARMUP_SECONDS)
        settled = previous and abs(figures["rps"] - previous) <= WARMUP_SETTLED * previous
        if settled and not figures["errors"]:
            return
        previous = figures["rps"]
    print(f"  warm-up did not settle; last round {figures}", file=sys.stderr)


def _wrk(port: int, script: Path, paths: Path, concurrency: int, seconds: int) -> dict:
    command = [
        "wrk", f"--threads={min(concurrency, 2)}", f"--connections={concurrency}",
        f"--duration={seconds}s", "--latency", f"--script={script}",
        f"http://127.0.0.1:{port}/", "--", str(paths),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return _wrk_parse(output)


def _wrk_parse(output: str) -> dict:
    """requests/s, p50 and p99 (ms) and errors from wrk --latency's report."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if rate is None or p50 is None or p99 is None:
        sys.exit(f"unexpected wrk output:\n{output}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(count) for count in socket_errors.groups())
    other = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if other:
        errors += int(other.group(1))
    return {
        "rps": float(rate.group(1)),
        "p50_ms": _milliseconds(*p50.groups()),
        "p99_ms": _milliseconds(*p99.groups()),
        "errors": errors,
    }


def _milliseconds(value: str, unit: str) -> float:
    return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit], 3)


def production_server_choose(results: list[Run]) -> str:
    """The server with the highest (a) rate at REPORTED_CONCURRENCY; PREFERRED_SERVER when it is
    within CLOSE_SHARE of that."""
    rates = {
        run.server: run.rps
        for run in results
        if run.variant == "a" and run.concurrency == REPORTED_CONCURRENCY
    }
    fastest = max(rates, key=rates.__getitem__)
    if rates.get(PREFERRED_SERVER, 0) >= CLOSE_SHARE * rates[fastest]:
        return PREFERRED_SERVER
    return fastest


HEADER = f"{'server':<10} {'variant':<8} {'conc':>5} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} errors"


def _row(run: Run) -> str:
    return (
        f"{run.server:<10} {run.variant:<8} {run.concurrency:>5} {run.rps:>9.0f} "
        f"{run.p50_ms:>8.2f} {run.p99_ms:>8.2f} {run.errors:>6}"
    )


def _ratio(chosen: dict[str, Run], top: str, bottom: str) -> float | None:
    # None when a variant was left out (BENCH_VARIANTS, for a quicker look at a few).
    if top not in chosen or bottom not in chosen:
        return None
    return round(chosen[top].rps / chosen[bottom].rps, 3)


def _report(results: list[Run]) -> None:
    print()
    print(HEADER)
    for run in results:
        print(_row(run))
    server = production_server_choose(results)
    chosen = {
        run.variant: run
        for run in results
        if run.server == server and run.concurrency == REPORTED_CONCURRENCY
    }
    print(
        f"\nproduction server: {server} (fastest (a) at concurrency {REPORTED_CONCURRENCY}; "
        f"{PREFERRED_SERVER} when within {CLOSE_SHARE:.0%} of it)"
    )
    print(
        json.dumps(
            {
                "server": server,
                "rps": {letter: round(run.rps) for letter, run in chosen.items()},
                "p50_ms": {letter: run.p50_ms for letter, run in chosen.items()},
                "p99_ms": {letter: run.p99_ms for letter, run in chosen.items()},
                "errors": sum(run.errors for run in chosen.values()),
                "ratio_c_over_a": _ratio(chosen, "c", "a"),
                "ratio_c_over_d": _ratio(chosen, "c", "d"),
            }
        )
    )


def _bench_database(url: str) -> str:
    import psycopg2

    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        cursor.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()
    return urlunsplit(urlsplit(url)._replace(path=f"/{DATABASE}"))


def _bench_redis(url: str) -> str:
    import redis

    bench_url = urlunsplit(urlsplit(url)._replace(path=f"/{REDIS_DB}"))
    redis.Redis.from_url(bench_url).flushdb()
    return bench_url


def _cleanup(admin_url: str, work_dir: Path) -> None:
    """Drop the benchmark's database, Redis keys and files (the servers are stopped by now)."""
    import psycopg2
    import redis

    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()
    shutil.rmtree(work_dir, ignore_errors=True)
    try:
        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.close()
    except Exception as error:
        # Not worth hiding the run's own outcome for: the next run starts both anew.
        print(f"cleanup: {error}", file=sys.stderr)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited ({process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the server did not start")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as interrupt:
        sys.exit(f"interrupted ({interrupt or 'Ctrl-C'}); the servers are stopped")
