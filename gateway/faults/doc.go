// Package faults is the fault suite: it drives the real gateway, worker and
// broker binaries on loopback with scripted clients, breaks one thing per
// test (a process killed at a chosen point, the broker, PostgreSQL or Redis
// stopped, connections cut, the stream data lost, a poison record, a
// reconnect storm) and then checks, Jepsen-style, from the clients' records
// and from PostgreSQL and Kafka, that the guarantees of docs/reliability.md
// held. Its tests are built only with the "faults" tag (`go tool task
// test:faults`); without the tag this package has no tests.
//
// Every loop is bounded in count and in time; recovery times are measured
// and logged (and written to .run/faults/summary.json), never asserted.
package faults
