#!/usr/bin/env bash
# Runs once, on the first start of the primary (an empty data folder), from
# /docker-entrypoint-initdb.d of the official postgres image: creates the
# role the replica streams with, its replication slot, and lets that role
# connect for replication from the stack's network with its password.
set -euo pipefail
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD is not set}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	--set=password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot('replica_1');
SQL

# "all" in the database column does not match replication connections.
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
