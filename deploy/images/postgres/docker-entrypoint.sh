#!/bin/bash
# The official image's contract: as root, own PGDATA and drop to postgres; on an empty PGDATA,
# initdb with POSTGRES_USER / POSTGRES_PASSWORD (scram over TCP) and create POSTGRES_DB.
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres: "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
  psql -q -U "$POSTGRES_USER" -d postgres -v db="$POSTGRES_DB" \
    <<<"SELECT 'CREATE DATABASE '||quote_ident(:'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname=:'db')\gexec"
  pg_ctl -m fast -w stop >/dev/null
fi
exec "$@"
