#!/usr/bin/env bash
# The one test command: installs what the integration tests drive (psql, a
# Python venv with the PostgreSQL drivers), then runs every Rust test.
#
# Safe to re-run: each step is skipped when its result is already there.
# Extend by adding an `ensure_*` function and calling it from `main`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

venv_dir="$repo_root/.venv-test"
python_packages=("psycopg[binary]" "psycopg2-binary" "sqlalchemy" "duckdb" "pyarrow")

log() {
    echo "==> $*"
}

apt_updated=0
apt_install() {
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@"
}

sudo=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
fi

ensure_psql() {
    if command -v psql >/dev/null 2>&1; then
        log "psql found: $(psql --version)"
        return
    fi
    apt_install postgresql-client
}

find_python() {
    local candidate
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
}

venv_ready() {
    [[ -x "$venv_dir/bin/python" ]] &&
        "$venv_dir/bin/python" -c 'import psycopg, psycopg2, sqlalchemy, duckdb, pyarrow' >/dev/null 2>&1
}

ensure_python_venv() {
    if venv_ready; then
        log "python venv ready: $venv_dir"
        return
    fi
    local python
    python="$(find_python)"
    if [[ -z "$python" ]] || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3 python3-venv
        python=python3
    fi
    if [[ ! -x "$venv_dir/bin/python" ]]; then
        log "creating python venv at $venv_dir"
        "$python" -m venv "$venv_dir"
    fi
    log "installing ${python_packages[*]} into $venv_dir"
    "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check "${python_packages[@]}"
    venv_ready || {
        echo "error: the venv at $venv_dir still cannot import psycopg, psycopg2, sqlalchemy, duckdb and pyarrow" >&2
        exit 1
    }
}

# A scratch PostgreSQL server on a Unix socket: the SQL corpus is checked
# against it (tests/it/slt.rs, slt::postgres), so expected outputs stay
# PostgreSQL's answers. Stopped when this script exits.
ensure_postgres_reference() {
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
        apt_install postgresql
        bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    fi
    pg_dir="$(mktemp -d /tmp/runnel-pgref.XXXXXX)"
    local as_owner=()
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres "$pg_dir"
        as_owner=(su postgres -s /bin/sh -c)
    else
        as_owner=(sh -c)
    fi
    log "starting a scratch PostgreSQL ($bin) in $pg_dir"
    "${as_owner[@]}" "'$bin/initdb' -D '$pg_dir/data' -A trust -U postgres >'$pg_dir/initdb.log' 2>&1"
    "${as_owner[@]}" "'$bin/pg_ctl' -D '$pg_dir/data' -l '$pg_dir/server.log' -w \
        -o \"-c listen_addresses='' -c unix_socket_directories='$pg_dir'\" start >/dev/null"
    pg_stop=("${as_owner[@]}" "'$bin/pg_ctl' -D '$pg_dir/data' -m fast stop >/dev/null")
    trap 'stop_postgres_reference' EXIT
    export RUNNEL_SLT_POSTGRES="host=$pg_dir user=postgres dbname=postgres"
}

stop_postgres_reference() {
    if [[ -n "${pg_dir:-}" ]]; then
        "${pg_stop[@]}" || true
        rm -rf "$pg_dir"
    fi
}

# tansu, a Kafka-protocol broker in Rust, for tests/it/kafka.rs: built from
# crates.io once per machine (about 8 minutes on 2 cores) into a cache dir
# outside the clone, so later runs and fresh CI clones reuse it.
ensure_tansu() {
    local root="${HOME:-/tmp}/.cache/runnel/tools"
    local bin="$root/bin/tansu"
    if [[ ! -x "$bin" ]]; then
        log "installing tansu 0.6.0 into $root (about 8 minutes, once per machine)"
        cargo install tansu --version 0.6.0 --features dynostore --locked --root "$root"
    fi
    log "tansu found: $bin"
    export RUNNEL_TANSU="$bin"
}

run_cargo_tests() {
    export RUNNEL_TEST_PYTHON="$venv_dir/bin/python"
    # CI clones afresh each run; a target dir outside the clone lets runs on
    # the same machine reuse the DataFusion build.
    local default_target="$repo_root/target"
    if [[ "${CI:-}" == "true" ]]; then
        default_target="${HOME:-/tmp}/.cache/runnel/ci-target"
    fi
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$default_target}"
    log "cargo test --locked --workspace --no-fail-fast (target dir $CARGO_TARGET_DIR)"
    # --no-fail-fast: one failing test binary must not hide the others' results.
    cargo test --locked --workspace --no-fail-fast "$@"
}

main() {
    ensure_psql
    ensure_python_venv
    ensure_tansu
    ensure_postgres_reference
    run_cargo_tests "$@"
    log "all tests passed"
}

main "$@"
