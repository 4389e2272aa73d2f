#!/usr/bin/env bash
# Starts (or reuses) the throwaway PostgreSQL cluster the integration tests use, and prints its connection string.
# Idempotent. Same logic as tests/HyperSd.Testing/PostgresServer.cs; both serialise on the same flock.
set -euo pipefail

if [[ -n "${HYPERSD_TEST_POSTGRES:-}" ]]; then
  echo "$HYPERSD_TEST_POSTGRES"
  exit 0
fi

dir=/tmp/hypersd-pg
port=55432
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  echo "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/<version>/bin;" \
       "install them with: apt-get install postgresql" >&2
  exit 1
fi

# The server refuses to run as root: create and run the cluster as the postgres OS user then.
as_owner() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

exec 9>/tmp/hypersd-pg.lock
flock -w 120 9
if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  as_owner mkdir -p "$dir"
  if [[ ! -f "$dir/data/PG_VERSION" ]]; then
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-sync >&2
  fi
  if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" >&2; then
    cat "$dir/server.log" >&2 || true
    exit 1
  fi
fi
echo "Host=127.0.0.1;Port=$port;Username=postgres;Database=postgres"
