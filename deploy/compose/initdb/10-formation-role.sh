#!/bin/sh
# The app's own role and database, created once when the postgres image initialises an empty data
# directory (it runs /docker-entrypoint-initdb.d/*.sh as the superuser POSTGRES_USER). The role
# formation may log in and create databases (the tests' test_formation) and nothing more: not a
# superuser, so PostgreSQL's superuser_reserved_connections stay free for the operator's psql
# however many connections the formation opens (docs/connections.md#the-apps-own-role).
# pg_signal_backend lets the release phase end a session that blocks its migration;
# pg_read_all_stats lets it and /metrics read every session in pg_stat_activity.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v password="${FORMATION_DB_PASSWORD:?set FORMATION_DB_PASSWORD}" <<'SQL'
CREATE ROLE formation LOGIN CREATEDB NOSUPERUSER PASSWORD :'password';
GRANT pg_signal_backend, pg_read_all_stats TO formation;
CREATE DATABASE formation OWNER formation;
SQL
