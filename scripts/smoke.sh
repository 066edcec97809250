#!/usr/bin/env bash
# Embedded-default smoke run: the `make run` stack (SQLite, no Redis server, Celery worker and
# beat on the filesystem broker, gunicorn) in a throwaway data directory, driven over HTTP by
# scripts/smoke.py through the whole loop.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The suite's PostgreSQL and Redis must not leak in: this run proves the embedded default.
unset DATABASE_URL REDIS_URL CELERY_BROKER_URL
COREMETRICS_DATA_DIR="$(mktemp -d /tmp/coremetrics-smoke.XXXXXX)"
export COREMETRICS_DATA_DIR
export HOST=127.0.0.1
export PORT
PORT=$("$ROOT/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export RUN_VISITORS=200

bash scripts/run.sh >"$COREMETRICS_DATA_DIR/run.log" 2>&1 &
run_pid=$!
finish() {
    local rc=$?
    kill "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
    if ((rc != 0)); then
        echo "--- run.log"; cat "$COREMETRICS_DATA_DIR/run.log" || true
        echo "--- celery.log (tail)"; tail -n 40 "$COREMETRICS_DATA_DIR/log/celery.log" || true
        echo "--- web.log (tail)"; tail -n 40 "$COREMETRICS_DATA_DIR/log/web.log" || true
    fi
    rm -rf "$COREMETRICS_DATA_DIR"
    exit "$rc"
}
trap finish EXIT

"$ROOT/.venv/bin/python" scripts/smoke.py "http://$HOST:$PORT"

# The demo's email campaign, sent in the foreground through the embedded default's file
# backend; smoke.py then follows the tracking addresses of a message it finds there.
export PUBLIC_BASE_URL="http://$HOST:$PORT" DEBUG=1  # as run.sh runs the stack
campaign=$("$ROOT/.venv/bin/python" manage.py shell -v 0 -c \
    'from campaigns.models import EmailCampaign as E; print(E.objects.get(name="Driver week for buyers").pk)')
"$ROOT/.venv/bin/python" manage.py send_email_campaign --campaign "$campaign"
"$ROOT/.venv/bin/python" scripts/smoke.py "http://$HOST:$PORT" --mail "$COREMETRICS_DATA_DIR/mail"
