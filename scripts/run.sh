#!/usr/bin/env bash
# `make run`: set up and start coremetrics on the embedded default (SQLite, no Redis server,
# Celery through the filesystem broker), with the demo golf shop seeded.
#   HOST, PORT       where the web server listens (127.0.0.1:8000)
#   RUN_VISITORS     synthetic visitors to seed (3000)
# Production runs the same processes with DATABASE_URL and REDIS_URL set (docs/deployment.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
BASE_URL="http://$HOST:$PORT"
export DEBUG=${DEBUG:-1}
export COREMETRICS_DATA_DIR=${COREMETRICS_DATA_DIR:-$ROOT/var}
export PUBLIC_BASE_URL=${PUBLIC_BASE_URL:-$BASE_URL}
PY="$ROOT/.venv/bin/python"

bash scripts/bootstrap.sh
mkdir -p "$COREMETRICS_DATA_DIR/broker/processed" "$COREMETRICS_DATA_DIR/log"

"$PY" manage.py migrate --no-input -v 0
"$PY" manage.py collectstatic --no-input -v 0
"$PY" manage.py seed_demo --base-url "$BASE_URL" --visitors "${RUN_VISITORS:-3000}" --demo-schedule

children=()
stop() {
    trap - EXIT INT TERM
    kill "${children[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$ROOT/.venv/bin/celery" -A coremetrics worker --beat --concurrency 1 --loglevel INFO \
    --schedule "$COREMETRICS_DATA_DIR/celerybeat-schedule" \
    >"$COREMETRICS_DATA_DIR/log/celery.log" 2>&1 &
children+=($!)

"$ROOT/.venv/bin/gunicorn" coremetrics.wsgi --bind "$HOST:$PORT" --workers 2 --threads 4 \
    --access-logfile - --error-logfile - >"$COREMETRICS_DATA_DIR/log/web.log" 2>&1 &
children+=($!)

"$PY" - "$BASE_URL/demo/shop/" <<'PYTHON'
import sys, time, urllib.request
for _ in range(150):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        break
    except OSError:
        time.sleep(0.2)
PYTHON

cat <<TEXT

  coremetrics is running (embedded default: SQLite, no Redis, Celery worker + beat).

  Demo shop (embeds the tag):  $BASE_URL/demo/shop/
  Console (Django admin):      $BASE_URL/admin/
      superuser:  admin / coremetrics
      marketer:   marketer / coremetrics   (sees only the golf shop)

  Browse, add a product to the cart and buy it: within a minute the consolidation job
  (every 30 s here) loads your events, the tables are rebuilt, and a reload of the shop
  shows you the returning buyers' banner.
  Email: Campaigns > Email campaigns > "Driver week for buyers" > Send now. The messages are
  written to $COREMETRICS_DATA_DIR/mail/ (EMAIL_URL names a real server; docs/email.md).
  Logs: $COREMETRICS_DATA_DIR/log/   Stop: Ctrl-C

TEXT
wait -n "${children[@]}"
