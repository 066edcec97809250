#!/usr/bin/env bash
# Full test run: what `make test` and CI (.ci/run) execute.
# Any arguments are passed to pytest, e.g.  scripts/test.sh -k campaigns -x
#
# Every step runs even if an earlier one failed; the exit status is non-zero
# if any step failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT_DIR="$ROOT/var/test-output"
PY="$ROOT/.venv/bin/python"
RUFF="$ROOT/.venv/bin/ruff"

cleanup() {
    local rc=$? pids
    trap - EXIT INT TERM
    pids=$(jobs -pr)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086 # one PID per word
        kill $pids 2>/dev/null || true
    fi
    bash scripts/services.sh stop || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash scripts/bootstrap.sh --system
bash scripts/services.sh start >/dev/null
# shellcheck source=/dev/null
source var/test-services/env
export DATABASE_URL REDIS_URL
# Production must set its own; the run uses a throwaway one (manage.py and mypy load settings).
export SECRET_KEY=${SECRET_KEY:-test-secret-key-not-for-production-xxxxxxxxxxxxxxxxxxxx}
mkdir -p "$OUT_DIR"

STEP_NAMES=()
STEP_RESULTS=()
STEP_NOTES=()
record() { # name rc [note]
    STEP_NAMES+=("$1")
    if (($2 == 0)); then STEP_RESULTS+=(ok); else STEP_RESULTS+=(FAILED); fi
    STEP_NOTES+=("${3:-}")
}

banner() { printf '\n===== %s =====\n' "$1"; }

run_step() { # name command...
    local name=$1 rc=0 note=""
    shift
    banner "$name"
    "$@" || rc=$?
    if ((rc != 0)); then note="exit $rc"; fi
    record "$name" "$rc" "$note"
}

step_pytest() {
    local rc=0 note
    banner pytest
    "$PY" -m pytest -q -p no:cacheprovider tests "$@" 2>&1 | tee "$OUT_DIR/pytest.log" || rc=${PIPESTATUS[0]}
    note=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|skipped|deselected)|no tests ran' \
        "$OUT_DIR/pytest.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)
    # Exit code 5 (nothing collected) must fail the run, which any non-zero rc does.
    if ((rc == 5)); then note="no tests collected (exit 5)"; fi
    if ((rc != 0)) && [[ -z $note ]]; then note="exit $rc"; fi
    record pytest "$rc" "$note"
}

step_smoke() {
    if [[ -f scripts/smoke.sh ]]; then
        run_step smoke bash scripts/smoke.sh
    else
        banner smoke
        echo "scripts/smoke.sh missing" >&2
        record smoke 1 "scripts/smoke.sh missing"
    fi
}

# The hand-written SQL of rules, reports and A/B results also runs on the embedded default:
# those modules again on a throwaway SQLite database, without Redis.
step_pytest_sqlite() {
    local db
    db=$(mktemp -d)/coremetrics.sqlite3
    run_step "pytest (SQLite)" env DATABASE_URL="sqlite:///$db" REDIS_URL= \
        "$PY" -m pytest -q -p no:cacheprovider \
        tests/segmentation/test_behaviours.py tests/segmentation/test_rules.py \
        tests/segmentation/test_rules_property.py tests/aggregation/test_activity.py \
        tests/campaigns/test_report.py tests/campaigns/test_statistics.py \
        "tests/campaigns/test_experiments.py::test_results_count_what_each_group_did_after_seeing_the_campaign"
    rm -f "$db"
}

step_pytest "$@"
step_pytest_sqlite
step_smoke
run_step "ruff check" "$RUFF" check .
run_step "ruff format --check" "$RUFF" format --check .
run_step "mypy" "$ROOT/.venv/bin/mypy"
run_step "tag size budget" "$PY" bench/tag_size.py
run_step "makemigrations --check" "$PY" manage.py makemigrations --check --dry-run

failed=0
banner summary
for i in "${!STEP_NAMES[@]}"; do
    printf '%-24s %-7s %s\n' "${STEP_NAMES[i]}" "${STEP_RESULTS[i]}" "${STEP_NOTES[i]}"
    if [[ ${STEP_RESULTS[i]} != ok ]]; then failed=$((failed + 1)); fi
done
if ((failed)); then
    echo "test.sh: $failed step(s) FAILED"
    exit 1
fi
echo "test.sh: all steps ok"
