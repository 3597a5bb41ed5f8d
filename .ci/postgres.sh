#!/usr/bin/env bash
# Throwaway local PostgreSQL for the storage tests (idempotent).
#
#   eval "$(bash .ci/postgres.sh)"      # install if missing, init, start, create user and database;
#                                       # prints: export MISDECLARE_TEST_POSTGRES_URL=...
#   bash .ci/postgres.sh stop           # stop the server (the data directory is kept)
#
# Everything but the export line goes to stderr, so that the output can be eval'ed.
# The server listens on 127.0.0.1 and a unix socket in /tmp only, runs as the 'postgres' system
# user (PostgreSQL refuses root) and trades durability for speed (fsync off): test data only.
set -euo pipefail

PORT="${MISDECLARE_PG_PORT:-55432}"
ROOT="${MISDECLARE_PG_ROOT:-/tmp/misdeclare-pg}"
DATA="$ROOT/data"
USER_NAME=misdeclare
PASSWORD=misdeclare
DATABASE=misdeclare_test

log() { echo "postgres.sh: $*" >&2; }

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_postgres() {
  if command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  fi
}

install_postgres() {
  if [ -n "$(pg_bin)" ] && id postgres >/dev/null 2>&1; then
    return
  fi
  log "installing PostgreSQL (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
}

psql_admin() {
  as_postgres "$BIN/psql" -h /tmp -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"
}

BIN=""
if [ "${1:-start}" = "stop" ]; then
  BIN="$(pg_bin)"
  if [ -n "$BIN" ] && [ -f "$DATA/PG_VERSION" ]; then
    as_postgres "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2 || true
  fi
  exit 0
fi

install_postgres
BIN="$(pg_bin)"

mkdir -p "$ROOT"
chown postgres: "$ROOT"
if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initialising a cluster in $DATA"
  as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --no-locale >&2
fi

if ! as_postgres "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting on 127.0.0.1:$PORT"
  as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$ROOT/server.log" -w -t 60 \
    -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2
fi

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" != "1" ]; then
  psql_admin -c "CREATE ROLE $USER_NAME LOGIN CREATEDB PASSWORD '$PASSWORD'" >&2
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE $DATABASE OWNER $USER_NAME" >&2
fi

echo "export MISDECLARE_TEST_POSTGRES_URL=postgresql+psycopg://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DATABASE"
