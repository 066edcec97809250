#!/usr/bin/env bash
# Prepare a machine for running coremetrics.
#
#   scripts/bootstrap.sh            create/update .venv from requirements-dev.txt
#   scripts/bootstrap.sh --system   also apt-get install missing system packages
#                                   (redis-server, chromium, postgresql, nginx, wrk)
#
# Idempotent: a second run with unchanged requirements does nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# Non-root shells often lack the sbin dirs (nginx, runuser, useradd live there).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

have_initdb() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null
}

# Prints the Debian packages that are needed but missing, one per line.
missing_packages() {
    command -v make >/dev/null || echo make
    command -v python3 >/dev/null || echo python3
    python3 -c 'import ensurepip, venv' 2>/dev/null || echo python3-venv
    command -v redis-server >/dev/null || echo redis-server
    [[ -x /usr/bin/chromium ]] || echo chromium
    have_initdb || echo postgresql
    command -v nginx >/dev/null || echo nginx-light
    # The load generator of bench/delivery.py.
    command -v wrk >/dev/null || echo wrk
    # Used by scripts/services.sh: runuser (util-linux) and useradd (passwd).
    command -v runuser >/dev/null || echo util-linux
    command -v useradd >/dev/null || echo passwd
}

install_system() {
    local -a pkgs
    mapfile -t pkgs < <(missing_packages)
    if ((${#pkgs[@]} == 0)); then
        log "system packages: all present"
        return 0
    fi
    log "system packages missing: ${pkgs[*]}"
    if ((EUID != 0)); then
        die "not root; install them yourself: sudo apt-get install -y --no-install-recommends ${pkgs[*]}"
    fi

    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q

    # nginx-light is a transitional/absent package on some releases; fall back to nginx.
    local i
    for i in "${!pkgs[@]}"; do
        if [[ ${pkgs[i]} == nginx-light ]] && ! apt-cache show nginx-light >/dev/null 2>&1; then
            pkgs[i]=nginx
        fi
    done

    # Keep apt from starting the packaged daemons (redis on 6379, postgres' main
    # cluster, nginx on :80): the tests start their own throwaway instances.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        added_policy=1
    fi
    local rc=0
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${pkgs[@]}" || rc=$?
    if ((added_policy)); then rm -f "$policy"; fi
    ((rc == 0)) || die "apt-get install failed (exit $rc)"

    local -a still
    mapfile -t still < <(missing_packages)
    ((${#still[@]} == 0)) || die "still missing after install: ${still[*]}"
}

requirements_hash() {
    # LC_ALL=C keeps the glob order, hence the hash, the same on every machine.
    (export LC_ALL=C && cd "$ROOT" && cat requirements*.txt) | sha256sum | cut -c1-64
}

install_venv() {
    [[ -f $ROOT/requirements-dev.txt ]] || die "requirements-dev.txt not found in $ROOT"

    if [[ -d $VENV ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        # Recreate only a venv whose base interpreter is gone; anything else
        # (e.g. a permission problem) is for a human to look at.
        if [[ -O $VENV && ! -e $VENV/bin/python ]]; then
            log "existing .venv points to a missing Python; recreating"
            rm -rf "$VENV"
        else
            die "$VENV/bin/python does not run; fix it or remove .venv and retry"
        fi
    fi
    if [[ ! -d $VENV ]]; then
        command -v python3 >/dev/null || die "python3 not found (run: scripts/bootstrap.sh --system)"
        log "creating .venv"
        python3 -m venv "$VENV"
    fi

    local stamp
    stamp="$VENV/.installed-$(requirements_hash)"
    if [[ -f $stamp ]]; then
        log "venv up to date"
        return 0
    fi
    log "installing requirements-dev.txt"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
}

main() {
    local system=0 arg
    for arg in "$@"; do
        case $arg in
            --system) system=1 ;;
            -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
            *) die "unknown argument: $arg" ;;
        esac
    done
    if ((system)); then install_system; fi
    install_venv
}

main "$@"
