#!/usr/bin/env bash
# Entry point of the streaming replica (runs as the postgres user). On the
# first start (an empty data folder) it clones the primary with
# pg_basebackup through the replication slot and writes the standby
# settings (-R: standby.signal and primary_conninfo); then it runs the
# server as a hot standby. Later starts resume streaming from where the
# replica stopped.
set -euo pipefail
: "${PGDATA:?}" "${PRIMARY_HOST:?}" "${REPLICATION_SLOT:?}" "${REPLICATION_PASSWORD:?}"

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	echo "replica: cloning $PRIMARY_HOST into $PGDATA"
	until pg_isready -q -h "$PRIMARY_HOST" -p 5432; do sleep 1; done
	# An interrupted earlier clone leaves files behind; pg_basebackup
	# needs an empty folder.
	find "$PGDATA" -mindepth 1 -delete
	PGPASSWORD=$REPLICATION_PASSWORD pg_basebackup --host="$PRIMARY_HOST" --port=5432 \
		--username=replicator --no-password --pgdata="$PGDATA" --wal-method=stream \
		--slot="$REPLICATION_SLOT" --write-recovery-conf --checkpoint=fast --progress
fi
chmod 0700 "$PGDATA"
# The WAL receiver connects with libpq, which falls back to PGPASSWORD when
# primary_conninfo (written by -R) carries no password.
export PGPASSWORD=$REPLICATION_PASSWORD
# max_connections must be at least the primary's on a hot standby.
exec postgres -c hot_standby=on -c max_connections=200
