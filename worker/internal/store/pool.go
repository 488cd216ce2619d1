package store

import (
	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/shared/config"
)

// TunePool sets the session settings the store's queries rely on, unless
// the connection string already sets them.
//
// plan_cache_mode=force_custom_plan: pgx prepares every statement, and
// after five executions PostgreSQL may switch a prepared statement to a
// generic plan that it then keeps for the life of the connection. A plan
// made while the messages table was nearly empty (and never re-made,
// because nothing ANALYZEs the table when autovacuum is off) looks up
// duplicates with a sequential scan of the whole table in every batch.
// Custom plans are made per execution from the table's current size, so
// the look-ups stay on their indexes; planning costs well under a
// millisecond per batch. The one exception is the insert of a batch's rows
// (Store.Save sets plan_cache_mode = auto for the rest of the transaction
// just before it): custom plans there would re-plan the foreign-key checks
// for every row.
//
// It also sets the session defaults both binaries share
// (config.PostgresSessionDefaults): a batch's transaction holds its rooms'
// row locks, and a worker frozen or cut off inside one must not hold them
// for longer than its partitions.
func TunePool(cfg *pgxpool.Config) {
	params := cfg.ConnConfig.RuntimeParams
	if _, ok := params["plan_cache_mode"]; !ok {
		params["plan_cache_mode"] = "force_custom_plan"
	}
	config.PostgresSessionDefaults(params)
}
