//go:build faults

package faults

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"rooms/shared/testenv"
)

// TestFaultPostgresStoppedUnderLoad stops PostgreSQL (a private server)
// for 30 s while messages flow: sends are still acked (they only need
// Kafka), workers retry without leaving the group (no rebalance while the
// database is down), and after the restart everything is stored and
// delivered.
func TestFaultPostgresStoppedUnderLoad(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{privatePG: true})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(100, 300*time.Millisecond, 20*time.Second, 4*time.Minute)
	time.Sleep(3 * time.Second)
	rebalances := func() int {
		n := 0
		for _, p := range s.workers {
			n += p.LogCount("partitions revoked") + p.LogCount("partitions assigned")
		}
		return n
	}
	before := rebalances()
	s.pg.Stop()
	stopped := time.Now()
	time.Sleep(30 * time.Second)
	during := rebalances() - before
	s.pg.Start()
	healed := time.Now()
	r.measure("postgres_down_s", healed.Sub(stopped).Seconds())
	r.measure("rebalances_during_outage", float64(during))
	if during != 0 {
		t.Errorf("%d partition assignments or revocations while PostgreSQL was down: workers must keep their partitions", during)
	}
	w.verify(t, r, 3*time.Minute, "postgres_restart", healed)
	failed := 0
	for _, p := range s.workers {
		failed += p.LogCount("store batch failed")
	}
	r.measure("failed_store_tries", float64(failed))
	t.Logf("failed store tries logged: %d; rebalances while down: %d", failed, during)
}

// TestFaultPostgresConnectionsKilled terminates every connection to the
// test's database once a second for 15 s while messages flow: workers and
// gateways reconnect and nothing is lost or stored twice.
func TestFaultPostgresConnectionsKilled(t *testing.T) {
	r := record(t)
	s := newStack(t, stackOpts{})
	w := newWorkload(t, s, workloadOpts{rooms: 8, senders: 1, readers: 1})
	w.run(80, 200*time.Millisecond, 20*time.Second, 4*time.Minute)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	killed := 0
	for i := 0; i < 15; i++ {
		time.Sleep(time.Second)
		n, err := terminateSessions(ctx, admin, s.db.Name)
		if err != nil {
			t.Fatalf("terminate connections: %v", err)
		}
		killed += n
	}
	healed := time.Now()
	r.measure("connections_killed", float64(killed))
	t.Logf("terminated %d connections in 15 rounds", killed)
	w.verify(t, r, 3*time.Minute, "last_kill", healed)
}

// terminateSessions ends every session of database db but admin's own and
// returns how many it ended.
func terminateSessions(ctx context.Context, admin *pgx.Conn, db string) (int, error) {
	var n int
	err := admin.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()) AS t`, db).Scan(&n)
	return n, err
}

func adminDSN() string {
	if v := os.Getenv("ROOMS_TEST_PG"); v != "" {
		return v
	}
	return testenv.DefaultAdminDSN
}
