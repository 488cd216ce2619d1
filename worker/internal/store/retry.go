package store

import (
	"context"
	"fmt"
	"sort"

	"rooms/shared/message"
	"rooms/shared/retry"
)

// Save stores a batch and returns what it stored. It only returns an error
// when ctx ends first: transient errors (the server unreachable or shutting
// down, serialization failures, deadlocks, timeouts) are retried with capped
// exponential backoff without limit. Other errors count as failed attempts:
// after MaxAttempts of them the records are tried one by one, and each record
// that still fails is written to dead_letters, so the partition moves on.
func (s *Store) Save(ctx context.Context, recs []Record) (Result, error) {
	if len(recs) == 0 {
		return Result{}, nil
	}
	failures := 0
	for try := 1; ; try++ {
		res, err := s.write(ctx, recs, failures+1)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("store batch of %d: %w", len(recs), ctx.Err())
		}
		transient := retry.Transient(err)
		if !transient {
			failures++
			s.forgetUsers()
		}
		if s.opts.OnRetry != nil {
			s.opts.OnRetry(err, transient, try)
		}
		if failures >= s.opts.MaxAttempts {
			break
		}
		if err := s.sleep(ctx, try); err != nil {
			return Result{}, fmt.Errorf("store batch of %d: %w", len(recs), err)
		}
	}

	var total Result
	seen := map[seqKey]bool{}
	for _, rec := range recs {
		res, err := s.saveOne(ctx, rec, failures+1)
		if err != nil {
			return Result{}, fmt.Errorf("store batch of %d one by one: %w", len(recs), err)
		}
		total.Inserted += res.Inserted
		total.DeadLetters += res.DeadLetters
		for _, m := range res.Messages {
			k := seqKey{mustInt(m.RoomID), m.Seq}
			if !seen[k] {
				seen[k] = true
				total.Messages = append(total.Messages, m)
			}
		}
	}
	sortMessages(total.Messages)
	return total, nil
}

// saveOne tries a single record once more (transient errors aside) and
// dead-letters it when that fails.
func (s *Store) saveOne(ctx context.Context, rec Record, attempts int) (Result, error) {
	recs := []Record{rec}
	var lastErr error
	for try := 1; ; try++ {
		var res Result
		var err error
		if lastErr == nil {
			res, err = s.write(ctx, recs, attempts)
		} else {
			res, err = s.deadLetter(ctx, rec, lastErr.Error(), attempts)
		}
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("store record %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, ctx.Err())
		}
		transient := retry.Transient(err)
		if !transient && lastErr == nil {
			lastErr = err
		}
		if s.opts.OnRetry != nil {
			s.opts.OnRetry(err, transient, try)
		}
		if err := s.sleep(ctx, try); err != nil {
			return Result{}, fmt.Errorf("store record %s/%d@%d: %w", rec.Topic, rec.Partition, rec.Offset, err)
		}
	}
}

// deadLetter writes one record to dead_letters in a transaction of its
// own, one round trip.
func (s *Store) deadLetter(ctx context.Context, rec Record, reason string, attempts int) (Result, error) {
	tx, err := beginPipe(ctx, s.pool)
	if err != nil {
		return Result{}, err
	}
	defer tx.end(ctx)
	b := tx.batch()
	queueDeadLetters(b, []deadLetter{{rec: rec, reason: reason, attempts: attempts}})
	if err := tx.commitWith(ctx, b); err != nil {
		return Result{}, fmt.Errorf("insert 1 dead letter: %w", err)
	}
	return Result{DeadLetters: 1}, nil
}

// sleep waits the backoff of the given try: MinBackoff doubled per try,
// capped at MaxBackoff.
func (s *Store) sleep(ctx context.Context, try int) error {
	return retry.Sleep(ctx, retry.Backoff(s.opts.MinBackoff, s.opts.MaxBackoff, try))
}

func sortMessages(ms []message.Message) {
	sort.SliceStable(ms, func(i, j int) bool { return messageLess(ms[i], ms[j]) })
}

// messageLess orders stored messages by room, then seq.
func messageLess(a, b message.Message) bool {
	if ra, rb := mustInt(a.RoomID), mustInt(b.RoomID); ra != rb {
		return ra < rb
	}
	return a.Seq < b.Seq
}
