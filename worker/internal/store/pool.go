package store

import "github.com/jackc/pgx/v5/pgxpool"

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
// idle_in_transaction_session_timeout=10s: a batch's transaction holds
// its rooms' row locks, and its two round trips leave the server waiting
// on the worker for well under a millisecond. A worker that stops between
// them (its machine paused, or cut off without a reset) would hold the
// locks, and stall every batch of those rooms on the partition's next
// owner, until its connection ended: for a peer that never answers, after
// the kernel's keepalive of two hours. With the timeout the server ends
// such a session after 10 s, the same as the workers' session timeout in
// the consumer group (KAFKA_SESSION_TIMEOUT), so the partition and its
// rooms' locks come free together. A worker that wakes after that finds
// its connection gone and retries the batch, which de-duplication makes
// harmless (a fault test: TestFaultWorkerFrozenInTransaction).
func TunePool(cfg *pgxpool.Config) {
	params := cfg.ConnConfig.RuntimeParams
	if _, ok := params["plan_cache_mode"]; !ok {
		params["plan_cache_mode"] = "force_custom_plan"
	}
	if _, ok := params["idle_in_transaction_session_timeout"]; !ok {
		params["idle_in_transaction_session_timeout"] = IdleInTransactionTimeout
	}
}

// IdleInTransactionTimeout is the idle_in_transaction_session_timeout
// TunePool sets.
const IdleInTransactionTimeout = "10s"
