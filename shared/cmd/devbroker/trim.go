package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// The broker keeps its log in the data folder across restarts, and a
// restart reads all of it back. Without a bound the folder grows with every
// message the stack ever took (about 1 GB an hour at 1000 messages/s), and
// so do the broker's start time and memory. A real cluster bounds its log
// by time or size (retention.ms, retention.bytes) whether or not the
// records were consumed; the local stack is stopped and started at will, so
// the broker trims only what no one can still need: the records every
// consumer group has committed (the workers commit a record once it is
// stored in PostgreSQL and fanned out), and only once they are older than
// the keep window, so recent records stay readable for debugging.

// trimCommitted deletes, on every partition of every topic some consumer
// group has committed offsets on, the records below the lowest of those
// groups' committed offsets that are also older than keep. A partition one
// of those groups has no commit on is left alone, and a partition's last
// record always stays: the broker's data folder (kfake) rebuilds a
// partition's offsets from its records on start, so a partition trimmed
// to nothing would start again at offset 0, below the groups' commits,
// and their consumers would skip the next records. It returns how many
// records it deleted.
func trimCommitted(ctx context.Context, adm *kadm.Client, keep time.Duration) (int64, error) {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return 0, fmt.Errorf("list groups: %w", err)
	}
	groups := listed.Groups()
	if len(groups) == 0 {
		return 0, nil
	}
	fetched := adm.FetchManyOffsets(ctx, groups...)
	if err := fetched.Error(); err != nil {
		return 0, fmt.Errorf("fetch committed offsets: %w", err)
	}

	// Per topic, the groups with a commit on it; per partition, the lowest
	// commit and how many of those groups have one.
	type low struct {
		at     int64
		groups int
	}
	readers := map[string]map[string]bool{}
	lows := map[string]map[int32]*low{}
	for group, r := range fetched {
		r.Fetched.Each(func(o kadm.OffsetResponse) {
			if o.Err != nil || o.At < 0 {
				return
			}
			if readers[o.Topic] == nil {
				readers[o.Topic] = map[string]bool{}
				lows[o.Topic] = map[int32]*low{}
			}
			readers[o.Topic][group] = true
			l := lows[o.Topic][o.Partition]
			if l == nil {
				lows[o.Topic][o.Partition] = &low{at: o.At, groups: 1}
				return
			}
			l.at = min(l.at, o.At)
			l.groups++
		})
	}
	if len(lows) == 0 {
		return 0, nil
	}
	topics := make([]string, 0, len(lows))
	for t := range lows {
		topics = append(topics, t)
	}

	// The first offset at or after the keep window's start: records from
	// there on are kept even when committed. A partition any of these
	// lookups fails for (a topic deleted in the meantime) is left alone;
	// the others are still trimmed.
	recent, err := adm.ListOffsetsAfterMilli(ctx, time.Now().Add(-keep).UnixMilli(), topics...)
	if err != nil {
		return 0, fmt.Errorf("list offsets after the keep window: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return 0, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return 0, fmt.Errorf("list end offsets: %w", err)
	}

	del := kadm.Offsets{}
	for topic, parts := range lows {
		for p, l := range parts {
			if l.groups < len(readers[topic]) {
				continue // a group reads the topic but has not committed here
			}
			r, ok1 := recent.Lookup(topic, p)
			s, ok2 := starts.Lookup(topic, p)
			e, ok3 := ends.Lookup(topic, p)
			if !ok1 || !ok2 || !ok3 || r.Err != nil || s.Err != nil || e.Err != nil || r.Offset < 0 {
				continue
			}
			if to := min(l.at, r.Offset, e.Offset-1); to > s.Offset {
				del.Add(kadm.Offset{Topic: topic, Partition: p, At: to})
			}
		}
	}
	if len(del) == 0 {
		return 0, nil
	}
	resps, err := adm.DeleteRecords(ctx, del)
	if err != nil {
		return 0, fmt.Errorf("delete records: %w", err)
	}
	var n int64
	resps.Each(func(r kadm.DeleteRecordsResponse) {
		if s, ok := starts.Lookup(r.Topic, r.Partition); ok && r.Err == nil {
			n += r.LowWatermark - s.Offset
		}
	})
	if err := resps.Error(); err != nil {
		return n, fmt.Errorf("delete records: %w", err)
	}
	return n, nil
}

// trimLoop runs trimCommitted every interval until ctx ends. A failed
// round is logged and tried again at the next one; a partition is trimmed
// only when every lookup for it succeeded.
func trimLoop(ctx context.Context, adm *kadm.Client, interval, keep time.Duration, log *slog.Logger) {
	every(ctx, interval, func() {
		rctx, cancel := context.WithTimeout(ctx, interval)
		n, err := trimCommitted(rctx, adm, keep)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("trim committed records", "err", err, "records", n)
		case n > 0:
			log.Info("trimmed committed records", "records", n, "keep", keep.String())
		}
	})
}

// every runs fn every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
