#!/usr/bin/env bash
# Throwaway PostgreSQL + Redis for tests, kept under var/test-services/.
#
#   scripts/services.sh start   start both (no-op if already up), write var/test-services/env
#   scripts/services.sh stop    stop both and remove var/test-services/ (safe if nothing runs)
#   scripts/services.sh env     print the env file:  eval "$(scripts/services.sh env)"
#
# The env file exports DATABASE_URL and REDIS_URL.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/var/test-services"
ENV_FILE="$DIR/env"
# Non-root shells often lack the sbin dirs (runuser, useradd live there).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
PG_HOME_FILE="$DIR/pg.home" # where the PG data/socket dir lives (see pick_pg_home)
REDIS_DIR="$DIR/redis"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
PG_PORT_BASE=54329
REDIS_PORT_BASE=63799
DB_USER=coremetrics
DB_PASSWORD=coremetrics
DB_NAME=coremetrics

log() { printf '[services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers

free_port() {
    python3 - "$1" <<'EOF'
import socket, sys

start = int(sys.argv[1])
for port in range(start, start + 500):
    with socket.socket() as s:
        # Like the servers themselves: a TIME_WAIT leftover does not make a port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
else:
    sys.exit(f"no free TCP port in {start}..{start + 499}")
EOF
}

# True if $1 is a live process whose name contains $2 (guards against reused PIDs).
pid_is() {
    [[ $1 =~ ^[0-9]+$ ]] && grep -q -- "$2" "/proc/$1/comm" 2>/dev/null
}

wait_pid_gone() {
    local pid=$1 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

find_pg_bin() {
    local dir
    dir=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1 || true)
    if [[ -z $dir || ! -x $dir/initdb ]]; then
        local initdb
        initdb=$(command -v initdb || true)
        [[ -n $initdb ]] || return 1
        dir=$(dirname "$initdb")
    fi
    PG_BIN=$dir
}

# initdb refuses to run as root, so as root every server-side PG command runs as
# the "postgres" system user. cd / because that user may not be able to read $PWD.
run_pg() {
    if ((EUID == 0)); then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ensure_postgres_user() {
    ((EUID == 0)) || return 0
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
}

# The data dir normally sits in var/test-services/pg. Fall back to a dir under
# /tmp if the postgres user cannot reach the repo (e.g. a clone under /root) or
# the repo path would make the unix socket path exceed the ~107 byte limit.
pick_pg_home() {
    local home="$DIR/pg"
    mkdir -p "$home"
    if ((EUID == 0)); then chown postgres: "$home"; fi
    if ((${#home} > 80)) || ! run_pg test -w "$home"; then
        rm -rf "$home"
        home=$(mktemp -d "${TMPDIR:-/tmp}/coremetrics-pg.XXXXXX")
        chmod 755 "$home"
        if ((EUID == 0)); then chown postgres: "$home"; fi
    fi
    echo "$home" >"$PG_HOME_FILE"
    PG_HOME=$home
}

# ---------------------------------------------------------------- postgres

start_postgres() {
    find_pg_bin || die "PostgreSQL server binaries not found (run: scripts/bootstrap.sh --system)"
    ensure_postgres_user
    pick_pg_home
    local data="$PG_HOME/data" run="$PG_HOME/run" port
    run_pg mkdir -p "$run"
    port=$(free_port "$PG_PORT_BASE")

    log "initdb ($PG_BIN) in $data"
    run_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
        --no-sync >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; return 1; }

    # Durability is irrelevant for a throwaway test DB; these make it much faster.
    run_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF

# --- coremetrics test settings ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
EOF

    log "starting postgres on 127.0.0.1:$port"
    run_pg "$PG_BIN/pg_ctl" -D "$data" -l "$PG_HOME/postgres.log" -w -t 60 start >/dev/null \
        || { tail -n 30 "$PG_HOME/postgres.log" >&2 || true; return 1; }

    local i
    for ((i = 0; i < 60; i++)); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 && break
        sleep 0.5
    done
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5 || die "postgres did not become ready"

    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD'" \
        -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null

    PG_PORT=$port
    echo "$port" >"$DIR/pg.port"
}

stop_postgres() {
    [[ -f $PG_HOME_FILE ]] || return 0
    local home data pid
    home=$(<"$PG_HOME_FILE")
    data="$home/data"
    if [[ -f $data/postmaster.pid ]]; then
        pid=$(head -n 1 "$data/postmaster.pid")
        if pid_is "$pid" postgres; then
            log "stopping postgres (pid $pid)"
            find_pg_bin || true
            if [[ -z ${PG_BIN:-} ]] || ! run_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null; then
                kill -INT "$pid" 2>/dev/null || true # SIGINT = fast shutdown
                wait_pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    fi
    # Only ever delete a dir this script created.
    if [[ $home == "$DIR"/* || $home == "${TMPDIR:-/tmp}"/coremetrics-pg.* ]]; then
        rm -rf "$home"
    fi
}

# ---------------------------------------------------------------- redis

start_redis() {
    command -v redis-server >/dev/null || die "redis-server not found (run: scripts/bootstrap.sh --system)"
    command -v redis-cli >/dev/null || die "redis-cli not found (run: scripts/bootstrap.sh --system)"
    mkdir -p "$REDIS_DIR"
    local port
    port=$(free_port "$REDIS_PORT_BASE")
    log "starting redis on 127.0.0.1:$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_DIR/redis.log" \
        --dir "$REDIS_DIR"
    echo "$port" >"$DIR/redis.port"

    local i
    for ((i = 0; i < 100; i++)); do
        [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
    [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] \
        || { tail -n 30 "$REDIS_DIR/redis.log" >&2 || true; die "redis did not answer PING"; }
    REDIS_PORT=$port
}

stop_redis() {
    [[ -f $REDIS_PIDFILE ]] || return 0
    local pid port
    pid=$(<"$REDIS_PIDFILE")
    pid_is "$pid" redis || return 0
    log "stopping redis (pid $pid)"
    port=$(cat "$DIR/redis.port" 2>/dev/null || true)
    if [[ -n $port ]]; then
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
    if ! wait_pid_gone "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_pid_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
}

# ---------------------------------------------------------------- commands

healthy() {
    [[ -f $ENV_FILE && -f $DIR/pg.port && -f $DIR/redis.port ]] || return 1
    find_pg_bin || return 1
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$(<"$DIR/pg.port")" -t 2 || return 1
    [[ $(redis-cli -h 127.0.0.1 -p "$(<"$DIR/redis.port")" ping 2>/dev/null) == PONG ]]
}

cmd_stop() {
    stop_redis
    stop_postgres
    rm -rf "$DIR"
}

on_start_exit() {
    local rc=$?
    if ((rc != 0)); then
        log "start failed (exit $rc); cleaning up"
        cmd_stop || true
    fi
}

cmd_start() {
    if healthy; then
        log "already running"
        cat "$ENV_FILE"
        return 0
    fi
    cmd_stop # leftovers from a crashed run
    mkdir -p "$DIR"
    trap on_start_exit EXIT
    start_postgres
    start_redis
    cat >"$ENV_FILE" <<EOF
export DATABASE_URL=postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
EOF
    trap - EXIT
    log "ready; env in ${ENV_FILE#"$ROOT"/}"
    cat "$ENV_FILE"
}

cmd_env() {
    [[ -f $ENV_FILE ]] || die "services not running (run: scripts/services.sh start)"
    cat "$ENV_FILE"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 start|stop|env" >&2
        exit 2
        ;;
esac
