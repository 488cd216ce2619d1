// Package store writes batches of Kafka records to PostgreSQL: it decodes and
// validates them, de-duplicates them, assigns each room's gapless seq under
// the room's row lock and inserts the new rows, all in one transaction per
// batch. Records that can never be stored go to the dead_letters table.
//
// A batch costs two round trips, whatever its size: one for BEGIN and the
// reads (check users, lock rooms, look up duplicates), one for the writes
// (advance last_seq, insert the new rows and any dead letters) and COMMIT,
// each pipelined (pipetx.go).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/shared/message"
)

// Record is one Kafka record as the store sees it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
}

// Options tune a Store. Zero values take the defaults.
type Options struct {
	// MaxAttempts is how many times a batch may fail with a non-transient
	// error before its records are tried one by one (default 5).
	MaxAttempts int
	// MaxContent is the content length limit in characters
	// (default message.DefaultMaxContent).
	MaxContent int
	// TryTimeout bounds one try of a batch, from taking a connection to
	// the COMMIT (0: no bound). A try that has not finished by then is
	// abandoned, its connection closed, and retried as a transient error
	// on a new connection: a server that stopped answering without
	// closing the connection (a failover to another host, a network cut)
	// would otherwise hold the batch until the kernel gives up on the
	// connection, minutes later.
	TryTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause between retries
	// (defaults 50ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// OnRetry, when set, is called after every failed try with the error,
	// whether it is transient and the number of the try (from 1; 0 for a
	// Combiner's combined try, after which each batch in it is stored by
	// its own Save).
	OnRetry func(err error, transient bool, try int)
	// BeforeCommit, when set, is called after a batch's new rows are
	// inserted and before its transaction commits (a fault tests' crash
	// point, see consume.Failpoint). The COMMIT then takes a round trip
	// of its own; unset, it goes out with the writes.
	BeforeCommit func()
	// OnCommit, when set, is called after each committed transaction with
	// the time of the round trip that committed it: the writes and the
	// COMMIT, or the COMMIT alone when BeforeCommit is set (the commit
	// latency metric).
	OnCommit func(d time.Duration)
}

// Store writes batches to PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
	opts Options

	// known holds users seen to exist, so that a batch of known senders
	// skips the users look-up (users are never deleted by the service; an
	// operator's delete surfaces as a failing batch, which clears it).
	mu    sync.Mutex
	known map[int64]struct{}
}

// maxKnownUsers bounds Store.known; it is emptied when full.
const maxKnownUsers = 200_000

// unknownUsers returns the batch's users not known to exist, sorted.
func (s *Store) unknownUsers(users map[int64]bool) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int64
	for u := range users {
		if _, ok := s.known[u]; !ok {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (s *Store) rememberUsers(found map[int64]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known == nil || len(s.known)+len(found) > maxKnownUsers {
		s.known = make(map[int64]struct{}, len(found))
	}
	for u := range found {
		s.known[u] = struct{}{}
	}
}

// forgetUsers empties the cache of known users (after a failed batch, in
// case a user it relied on was deleted).
func (s *Store) forgetUsers() {
	s.mu.Lock()
	s.known = nil
	s.mu.Unlock()
}

// New returns a Store writing through pool.
func New(pool *pgxpool.Pool, opts Options) *Store {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.MaxContent <= 0 {
		opts.MaxContent = message.DefaultMaxContent
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	return &Store{pool: pool, opts: opts}
}

// Result is what one batch produced.
type Result struct {
	// Messages are the stored messages of the batch, new ones and
	// duplicates of already stored ones (with their stored seq), ordered
	// by room and, per room, by seq. Each stored row appears once.
	Messages []message.Message
	// Inserted is how many of Messages were inserted by this batch.
	Inserted int
	// DeadLetters is how many records went to the dead_letters table.
	DeadLetters int
}

// candidate is a record that decoded and validated.
type candidate struct {
	idx      int // index of rec in the batch
	rec      Record
	msg      message.Message
	roomID   int64
	userID   int64
	id       pgtype.UUID
	created  time.Time
	clientID *string
}

type deadLetter struct {
	idx      int // index of rec in the batch
	rec      Record
	reason   string
	attempts int
}

// permanentError marks a record that can never be stored, whatever the try.
type permanentError struct{ reason string }

func (e *permanentError) Error() string { return e.reason }

// decode turns a record into a candidate or says why it can never be stored.
func (s *Store) decode(idx int, rec Record) (candidate, error) {
	c := candidate{idx: idx, rec: rec}
	if err := json.Unmarshal(rec.Value, &c.msg); err != nil {
		return c, &permanentError{"decode value: " + err.Error()}
	}
	m := &c.msg
	m.Seq = 0
	var err error
	if c.roomID, err = strconv.ParseInt(m.RoomID, 10, 64); err != nil || c.roomID <= 0 {
		return c, &permanentError{fmt.Sprintf("invalid room_id %q", m.RoomID)}
	}
	if len(rec.Key) > 0 && string(rec.Key) != m.RoomID {
		return c, &permanentError{fmt.Sprintf("record key %q is not the room_id %q", rec.Key, m.RoomID)}
	}
	if c.userID, err = strconv.ParseInt(m.UserID, 10, 64); err != nil || c.userID <= 0 {
		return c, &permanentError{fmt.Sprintf("invalid user_id %q", m.UserID)}
	}
	if err := c.id.Scan(m.ID); err != nil {
		return c, &permanentError{fmt.Sprintf("invalid id %q", m.ID)}
	}
	if m.Nickname == "" {
		return c, &permanentError{"nickname is empty"}
	}
	if err := message.ValidateContent(m.Content, s.opts.MaxContent); err != nil {
		return c, &permanentError{"invalid content: " + err.Error()}
	}
	if m.ClientMsgID != "" {
		if err := message.ValidateClientMsgID(m.ClientMsgID); err != nil {
			return c, &permanentError{"invalid client_msg_id: " + err.Error()}
		}
		id := m.ClientMsgID
		c.clientID = &id
	}
	if c.created, err = time.Parse(time.RFC3339Nano, m.TimeCreated); err != nil {
		return c, &permanentError{fmt.Sprintf("invalid time_created %q", m.TimeCreated)}
	}
	return c, nil
}

type clientKey struct {
	roomID, userID int64
	clientID       string
}

type seqKey struct{ roomID, seq int64 }

// write stores one batch in one transaction. attempts is recorded on the
// dead letters it writes.
func (s *Store) write(ctx context.Context, recs []Record, attempts int) (Result, error) {
	w, err := s.writeTagged(ctx, recs, attempts)
	if err != nil {
		return Result{}, err
	}
	return Result{Messages: w.msgs, Inserted: len(w.inserted), DeadLetters: len(w.dead)}, nil
}

// written is what writeTagged stored, each part tagged with the index of
// the record it answers in the batch.
type written struct {
	msgs     []message.Message // ordered by room, then seq
	owners   []int             // owners[i]: the record msgs[i] answers
	inserted []int             // records inserted as new rows
	dead     []int             // records written to dead_letters
}

// errStoredBefore says that an optimistic write met rows stored before:
// the batch must be written again with the look-up of stored duplicates.
var errStoredBefore = errors.New("the batch repeats stored messages")

// writeTagged is write, telling which record each stored message, insert
// and dead letter belongs to (so a combined batch can be split again).
//
// A first try is optimistic: it assumes no record repeats a stored message
// and skips the look-up of stored duplicates. When every row went in, that
// was right and the batch commits. A row that breaks a unique index repeats
// a stored message: the insert fails, the transaction is rolled back (its
// seqs are not used) and the batch is written again with the look-up.
// Repeats are rare (a redelivery after a crash or rebalance, a client
// resending): the common batch saves a query and two index searches per
// record. The insert has no ON CONFLICT clause: that would probe every
// unique index for each row before inserting it, and the insert checks
// them anyway.
func (s *Store) writeTagged(ctx context.Context, recs []Record, attempts int) (written, error) {
	if s.opts.TryTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.TryTimeout)
		defer cancel()
	}
	if attempts <= 1 {
		res, err := s.writeOnce(ctx, recs, attempts, false)
		if !errors.Is(err, errStoredBefore) {
			return res, err
		}
	}
	return s.writeOnce(ctx, recs, attempts, true)
}

// writeOnce is one transaction of writeTagged, with or without the look-up
// of stored duplicates.
func (s *Store) writeOnce(ctx context.Context, recs []Record, attempts int, lookup bool) (written, error) {
	var res written
	var dead []deadLetter
	// lastSeq is each batch room's last_seq, read under its row lock.
	lastSeq := map[int64]int64{}
	var cands []candidate
	for i, rec := range recs {
		c, err := s.decode(i, rec)
		if err != nil {
			dead = append(dead, deadLetter{i, rec, err.Error(), attempts})
			continue
		}
		cands = append(cands, c)
	}

	tx, err := beginPipe(ctx, s.pool)
	if err != nil {
		return res, err
	}
	defer tx.end(ctx)

	byID := map[[16]byte]message.Message{}
	byClient := map[clientKey]message.Message{}
	if len(cands) > 0 {
		// One round trip for the three reads: the known users (a message of
		// an unknown user would violate the foreign key and fail the whole
		// batch, so it is dead-lettered up front), the rooms' last_seq under
		// their row locks (taken in id order so two batches sharing rooms
		// cannot deadlock; the lock serialises seq assignment per room), and
		// the stored rows the candidates duplicate.
		userSet := map[int64]bool{}
		roomSet := map[int64]bool{}
		for _, c := range cands {
			userSet[c.userID] = true
			roomSet[c.roomID] = true
		}
		b := tx.batch()
		unknown := s.unknownUsers(userSet)
		if len(unknown) > 0 {
			b.Queue(`SELECT id FROM users WHERE id = ANY($1)`, unknown)
		}
		b.Queue(`SELECT id, last_seq FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE`, keys(roomSet))
		if lookup {
			queueExisting(b, cands)
		}
		br, err := tx.send(ctx, b)
		if err != nil {
			return res, err
		}
		// The batch's users: known before, or found by the look-up.
		knownUsers := maps.Clone(userSet)
		for _, u := range unknown {
			knownUsers[u] = false
		}
		if len(unknown) > 0 {
			found, err := readIDs(br)
			if err != nil {
				_ = br.Close()
				return res, fmt.Errorf("check users: %w", err)
			}
			s.rememberUsers(found)
			maps.Copy(knownUsers, found)
		}
		rows, err := br.Query()
		if err != nil {
			_ = br.Close()
			return res, fmt.Errorf("lock rooms: %w", err)
		}
		var id, seq int64
		if _, err := pgx.ForEachRow(rows, []any{&id, &seq}, func() error { lastSeq[id] = seq; return nil }); err != nil {
			_ = br.Close()
			return res, fmt.Errorf("lock rooms: %w", err)
		}
		if lookup {
			if err := readExisting(br, byID, byClient); err != nil {
				_ = br.Close()
				return res, err
			}
		}
		if err := br.Close(); err != nil {
			return res, fmt.Errorf("read batch state: %w", err)
		}

		kept := cands[:0]
		for _, c := range cands {
			switch {
			case !knownUsers[c.userID]:
				dead = append(dead, deadLetter{c.idx, c.rec, fmt.Sprintf("unknown user %d", c.userID), attempts})
			case !hasKey(lastSeq, c.roomID):
				dead = append(dead, deadLetter{c.idx, c.rec, fmt.Sprintf("unknown room %d", c.roomID), attempts})
			default:
				kept = append(kept, c)
			}
		}
		cands = kept
	}

	// Assign seqs in batch order to the rows that are really new; a
	// duplicate (of a stored row or of an earlier record of the batch)
	// resolves to that row.
	var out []message.Message
	var owners []int
	var newRows rowColumns
	seen := map[seqKey]bool{}
	roomSeq := lastSeq
	advanced := map[int64]bool{}
	emit := func(idx int, m message.Message) {
		k := seqKey{mustInt(m.RoomID), m.Seq}
		if !seen[k] {
			seen[k] = true
			out = append(out, m)
			owners = append(owners, idx)
		}
	}
	for _, c := range cands {
		if m, ok := byID[c.id.Bytes]; ok {
			emit(c.idx, m)
			continue
		}
		if c.clientID != nil {
			if m, ok := byClient[clientKey{c.roomID, c.userID, *c.clientID}]; ok {
				emit(c.idx, m)
				continue
			}
		}
		roomSeq[c.roomID]++
		advanced[c.roomID] = true
		m := c.msg
		m.Seq = roomSeq[c.roomID]
		m.ID = uuidString(c.id)
		m.TimeCreated = message.FormatTime(c.created)
		byID[c.id.Bytes] = m
		if c.clientID != nil {
			byClient[clientKey{c.roomID, c.userID, *c.clientID}] = m
		}
		newRows.add(c, m.Seq)
		res.inserted = append(res.inserted, c.idx)
		emit(c.idx, m)
	}

	// One round trip for the writes and the COMMIT: advance last_seq,
	// insert the new rows, insert the dead letters. With BeforeCommit set
	// (a fault test's crash point) the COMMIT is a round trip of its own,
	// so that the crash falls between the written rows and the commit.
	b := tx.batch()
	if len(newRows.seqs) > 0 {
		var ids, seqs []int64
		for id, seq := range roomSeq {
			if advanced[id] {
				ids = append(ids, id)
				seqs = append(seqs, seq)
			}
		}
		// The UPDATE of rooms runs first, with the custom plans of
		// TunePool; the insert then runs with cached plans
		// (plan_cache_mode = auto, PostgreSQL's default, for the rest of
		// the transaction): its own plan has no choice to make, and its
		// foreign-key checks, two per row, would otherwise be planned again
		// for every row (a quarter of PostgreSQL's CPU at 2000 msgs/s). The
		// rows are locked already, so the order changes nothing else.
		b.Queue(`UPDATE rooms r SET last_seq = u.last_seq
			FROM unnest($1::bigint[], $2::bigint[]) AS u(id, last_seq)
			WHERE r.id = u.id AND u.last_seq > r.last_seq`, ids, seqs)
		b.Queue(`SET LOCAL plan_cache_mode = auto`)
		b.Queue(`INSERT INTO messages (room_id, seq, id, user_id, nickname, content, client_msg_id, time_created)
			SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::timestamptz[])`,
			newRows.rooms, newRows.seqs, newRows.ids, newRows.users, newRows.nicknames, newRows.contents, newRows.clientIDs, newRows.created)
	}
	if len(dead) > 0 {
		queueDeadLetters(b, dead)
	}
	ownCommit := s.opts.BeforeCommit != nil
	if !ownCommit {
		b.Queue("COMMIT")
	}
	start := time.Now()
	br, err := tx.send(ctx, b)
	if err != nil {
		return res, err
	}
	if len(newRows.seqs) > 0 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return res, fmt.Errorf("advance last_seq: %w", err)
		}
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return res, fmt.Errorf("plan mode: %w", err)
		}
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			if !lookup && isUniqueViolation(err) {
				return res, errStoredBefore
			}
			return res, fmt.Errorf("insert %d messages: %w", len(newRows.seqs), err)
		}
		if n := tag.RowsAffected(); n != int64(len(newRows.seqs)) {
			_ = br.Close()
			return res, fmt.Errorf("insert %d messages: %d rows inserted", len(newRows.seqs), n)
		}
	}
	if len(dead) > 0 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return res, fmt.Errorf("insert %d dead letters: %w", len(dead), err)
		}
	}
	if !ownCommit {
		if err := tx.readCommit(br); err != nil {
			_ = br.Close()
			return res, err
		}
	}
	if err := br.Close(); err != nil {
		return res, fmt.Errorf("write batch: %w", err)
	}
	if ownCommit {
		if len(newRows.seqs) > 0 {
			s.opts.BeforeCommit()
		}
		start = time.Now()
		if err := tx.commitWith(ctx, tx.batch()); err != nil {
			return res, err
		}
	}
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(time.Since(start))
	}
	order := make([]int, len(out))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return messageLess(out[order[i]], out[order[j]]) })
	res.msgs = make([]message.Message, len(out))
	res.owners = make([]int, len(out))
	for i, o := range order {
		res.msgs[i], res.owners[i] = out[o], owners[o]
	}
	for _, d := range dead {
		res.dead = append(res.dead, d.idx)
	}
	return res, nil
}

// rowColumns are the new rows of a batch, column by column (the arrays of
// one INSERT ... SELECT FROM unnest).
type rowColumns struct {
	rooms, seqs, users  []int64
	ids                 []pgtype.UUID
	nicknames, contents []string
	clientIDs           []*string
	created             []time.Time
}

func (r *rowColumns) add(c candidate, seq int64) {
	r.rooms = append(r.rooms, c.roomID)
	r.seqs = append(r.seqs, seq)
	r.ids = append(r.ids, c.id)
	r.users = append(r.users, c.userID)
	r.nicknames = append(r.nicknames, c.msg.Nickname)
	r.contents = append(r.contents, c.msg.Content)
	r.clientIDs = append(r.clientIDs, c.clientID)
	r.created = append(r.created, c.created)
}

// queueExisting queues the look-up of the stored rows the candidates
// duplicate, by id or by (room_id, user_id, client_msg_id); readExisting
// reads its result.
func queueExisting(b *pgx.Batch, cands []candidate) {
	ids := make([]pgtype.UUID, 0, len(cands))
	var rooms, users []int64
	var clients []string
	for _, c := range cands {
		ids = append(ids, c.id)
		if c.clientID != nil {
			rooms = append(rooms, c.roomID)
			users = append(users, c.userID)
			clients = append(clients, *c.clientID)
		}
	}
	b.Queue(`
		SELECT m.room_id, m.seq, m.id, m.user_id, m.nickname, m.content, m.client_msg_id, m.time_created
		FROM messages m WHERE m.id = ANY($1)
		UNION
		SELECT m.room_id, m.seq, m.id, m.user_id, m.nickname, m.content, m.client_msg_id, m.time_created
		FROM messages m
		JOIN unnest($2::bigint[], $3::bigint[], $4::text[]) AS k(room_id, user_id, client_msg_id)
		  ON m.room_id = k.room_id AND m.user_id = k.user_id AND m.client_msg_id = k.client_msg_id`,
		ids, rooms, users, clients)
}

func readExisting(br pgx.BatchResults, byID map[[16]byte]message.Message, byClient map[clientKey]message.Message) error {
	rows, err := br.Query()
	if err != nil {
		return fmt.Errorf("look up duplicates: %w", err)
	}
	var (
		roomID, seq, userID int64
		id                  pgtype.UUID
		nickname, content   string
		clientID            *string
		created             time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&roomID, &seq, &id, &userID, &nickname, &content, &clientID, &created}, func() error {
		m := message.Message{
			ID:          uuidString(id),
			Seq:         seq,
			RoomID:      strconv.FormatInt(roomID, 10),
			UserID:      strconv.FormatInt(userID, 10),
			Nickname:    nickname,
			Content:     content,
			TimeCreated: message.FormatTime(created),
		}
		byID[id.Bytes] = m
		if clientID != nil {
			m.ClientMsgID = *clientID
			byID[id.Bytes] = m
			byClient[clientKey{roomID, userID, *clientID}] = m
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("look up duplicates: %w", err)
	}
	return nil
}

// queueDeadLetters queues the insert of dead into dead_letters.
func queueDeadLetters(b *pgx.Batch, dead []deadLetter) {
	var (
		topics   []string
		parts    []int32
		offsets  []int64
		keys     [][]byte
		payloads [][]byte
		reasons  []string
		attempts []int32
	)
	for _, d := range dead {
		topics = append(topics, d.rec.Topic)
		parts = append(parts, d.rec.Partition)
		offsets = append(offsets, d.rec.Offset)
		keys = append(keys, d.rec.Key)
		payload := d.rec.Value
		if payload == nil {
			payload = []byte{}
		}
		payloads = append(payloads, payload)
		reasons = append(reasons, d.reason)
		attempts = append(attempts, int32(d.attempts))
	}
	// ON CONFLICT makes a re-delivered record (after a crash before its
	// offset was committed) land once.
	b.Queue(`
		INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, record_key, payload, error, attempts)
		SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], $5::bytea[], $6::text[], $7::int[])
		ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING`,
		topics, parts, offsets, keys, payloads, reasons, attempts)
}

func readIDs(br pgx.BatchResults) (map[int64]bool, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	found := map[int64]bool{}
	var id int64
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error { found[id] = true; return nil })
	return found, err
}

func keys(set map[int64]bool) []int64 {
	out := make([]int64, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func hasKey(m map[int64]int64, k int64) bool {
	_, ok := m[k]
	return ok
}

func mustInt(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func uuidString(u pgtype.UUID) string {
	v, _ := u.Value()
	s, _ := v.(string)
	return s
}

// isUniqueViolation reports whether err is PostgreSQL's unique_violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
