package app_test

import (
	"testing"
	"time"

	"rooms/shared/testenv"
)

func TestPostgresOutageDelaysButLosesNothing(t *testing.T) {
	srv := testenv.StartPGServer(t)
	e := newEnvOn(t, srv.Database(), 8)
	e.createTopic()
	e.produce(600)
	e.start("w1")
	e.eventually("first messages stored", func() bool { return e.stored() >= 100 })

	srv.Stop()
	e.produce(800)
	// The worker keeps polling and retries the failing batches.
	e.eventually("the worker to notice the outage", func() bool { return e.failed.Load() > 0 })
	time.Sleep(time.Second) // let the outage last a few retries; not an assertion
	srv.Start()

	e.produce(200)
	e.eventually("every message stored", func() bool { return e.stored() == e.total() })
	e.eventually("offsets committed", func() bool { return e.committed() == int64(e.total()) })
	e.checkPostgres()
	e.checkStreams(false)
	t.Logf("failed store tries: %d, partition pauses: %d", e.failed.Load(), e.paused.Load())
}
