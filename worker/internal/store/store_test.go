package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"rooms/shared/message"
	"rooms/shared/testenv"
	"rooms/worker/internal/store"
)

// fixture is a test database with users and rooms.
type fixture struct {
	pool  *pgxpool.Pool
	users []int64
	rooms []int64
	next  int64 // next offset
}

func newFixture(t *testing.T, users, rooms int) *fixture {
	t.Helper()
	return fixtureOn(t, testenv.Postgres(t), users, rooms)
}

// fixtureOn is newFixture on a database of the test's choosing.
func fixtureOn(t *testing.T, db *testenv.Database, users, rooms int) *fixture {
	t.Helper()
	f := &fixture{pool: db.Pool}
	ctx := context.Background()
	for i := range users {
		var id int64
		if err := db.Pool.QueryRow(ctx, `INSERT INTO users (nickname, password_hash) VALUES ($1, 'x') RETURNING id`,
			fmt.Sprintf("user%d", i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		f.users = append(f.users, id)
	}
	for i := range rooms {
		var id int64
		if err := db.Pool.QueryRow(ctx, `INSERT INTO rooms (name) VALUES ($1) RETURNING id`,
			fmt.Sprintf("room%d", i)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		f.rooms = append(f.rooms, id)
	}
	return f
}

var uuidCounter int

func newUUID() string {
	uuidCounter++
	return fmt.Sprintf("0193a000-0000-7000-8000-%012x", uuidCounter)
}

// rec builds a record of a message; clientID may be empty.
func (f *fixture) rec(t *testing.T, id string, room, user int64, content, clientID string) store.Record {
	t.Helper()
	m := message.Message{
		ID: id, RoomID: fmt.Sprint(room), UserID: fmt.Sprint(user), Nickname: fmt.Sprintf("n%d", user),
		Content: content, TimeCreated: message.FormatTime(time.Now()), ClientMsgID: clientID,
	}
	v, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return f.raw([]byte(fmt.Sprint(room)), v)
}

func (f *fixture) raw(key, value []byte) store.Record {
	r := store.Record{Topic: "t", Partition: 0, Offset: f.next, Key: key, Value: value}
	f.next++
	return r
}

type stored struct {
	room, seq int64
	id        string
}

func (f *fixture) messages(t *testing.T) []stored {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT room_id, seq, id::text FROM messages ORDER BY room_id, seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []stored
	for rows.Next() {
		var s stored
		if err := rows.Scan(&s.room, &s.seq, &s.id); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func (f *fixture) lastSeq(t *testing.T, room int64) int64 {
	t.Helper()
	var n int64
	if err := f.pool.QueryRow(context.Background(), `SELECT last_seq FROM rooms WHERE id = $1`, room).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (f *fixture) deadLetters(t *testing.T) map[int64]string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT kafka_offset, error FROM dead_letters`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]string{}
	for rows.Next() {
		var off int64
		var e string
		if err := rows.Scan(&off, &e); err != nil {
			t.Fatal(err)
		}
		out[off] = e
	}
	return out
}

// rejectBoom installs a trigger that rejects the content "boom": an error
// that is not transient, so it counts as a failed attempt.
func (f *fixture) rejectBoom(t *testing.T) {
	t.Helper()
	if _, err := f.pool.Exec(context.Background(), `
		CREATE FUNCTION reject_boom() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.content = 'boom' THEN RAISE EXCEPTION 'boom rejected'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER reject_boom BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION reject_boom();`); err != nil {
		t.Fatal(err)
	}
}

func seqsOf(ms []message.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, fmt.Sprintf("%s:%d", m.RoomID, m.Seq))
	}
	return out
}

func TestSaveGaplessAcrossBatchesAndRooms(t *testing.T) {
	f := newFixture(t, 2, 3)
	st := store.New(f.pool, store.Options{})
	ctx := context.Background()
	want := map[int64]int64{}
	for batch := range 4 {
		var recs []store.Record
		for i := range 10 {
			room := f.rooms[(batch+i)%3]
			recs = append(recs, f.rec(t, newUUID(), room, f.users[i%2], "hi", ""))
			want[room]++
		}
		res, err := st.Save(ctx, recs)
		if err != nil {
			t.Fatal(err)
		}
		if res.Inserted != 10 || len(res.Messages) != 10 {
			t.Fatalf("batch %d: inserted %d, returned %d, want 10", batch, res.Inserted, len(res.Messages))
		}
		for i := 1; i < len(res.Messages); i++ {
			a, b := res.Messages[i-1], res.Messages[i]
			if a.RoomID == b.RoomID && b.Seq != a.Seq+1 {
				t.Fatalf("batch %d: not in seq order: %v", batch, seqsOf(res.Messages))
			}
		}
	}
	got := map[int64][]int64{}
	for _, m := range f.messages(t) {
		got[m.room] = append(got[m.room], m.seq)
	}
	for _, room := range f.rooms {
		seqs := got[room]
		if int64(len(seqs)) != want[room] {
			t.Fatalf("room %d: %d messages, want %d", room, len(seqs), want[room])
		}
		for i, s := range seqs {
			if s != int64(i+1) {
				t.Fatalf("room %d: seqs %v are not 1..N", room, seqs)
			}
		}
		if n := f.lastSeq(t, room); n != want[room] {
			t.Fatalf("room %d: last_seq %d, want %d", room, n, want[room])
		}
	}
}

func TestSaveDuplicatesAndDeadLetters(t *testing.T) {
	tests := []struct {
		name string
		// prior is stored first; batch is then saved.
		prior func(f *fixture, t *testing.T) []store.Record
		batch func(f *fixture, t *testing.T, prior []store.Record) []store.Record
		// want is the returned messages as "room-index:seq" in order.
		want        []string
		inserted    int
		lastSeq     int64 // of room 0 after the batch
		deadOffsets []int64
	}{
		{
			name: "duplicate id within the batch",
			batch: func(f *fixture, t *testing.T, _ []store.Record) []store.Record {
				id := newUUID()
				return []store.Record{
					f.rec(t, id, f.rooms[0], f.users[0], "a", ""),
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "b", ""),
					f.rec(t, id, f.rooms[0], f.users[0], "a", ""),
				}
			},
			want: []string{"0:1", "0:2"}, inserted: 2, lastSeq: 2,
		},
		{
			name: "duplicate client_msg_id within the batch",
			batch: func(f *fixture, t *testing.T, _ []store.Record) []store.Record {
				return []store.Record{
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", "c1"),
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", "c1"),
					// same client id from another user is not a duplicate
					f.rec(t, newUUID(), f.rooms[0], f.users[1], "a", "c1"),
				}
			},
			want: []string{"0:1", "0:2"}, inserted: 2, lastSeq: 2,
		},
		{
			name: "duplicates against the table",
			prior: func(f *fixture, t *testing.T) []store.Record {
				return []store.Record{
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", "c1"),
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "b", ""),
				}
			},
			batch: func(f *fixture, t *testing.T, prior []store.Record) []store.Record {
				var m message.Message
				_ = json.Unmarshal(prior[1].Value, &m)
				return []store.Record{
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "a again", "c1"), // by client_msg_id → seq 1
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "new", ""),       // → seq 3
					f.rec(t, m.ID, f.rooms[0], f.users[0], "b", ""),              // by id → seq 2
				}
			},
			want: []string{"0:1", "0:2", "0:3"}, inserted: 1, lastSeq: 3,
		},
		{
			name: "unknown room and undecodable records are dead letters, the batch continues",
			batch: func(f *fixture, t *testing.T, _ []store.Record) []store.Record {
				return []store.Record{
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", ""),
					f.rec(t, newUUID(), 999999, f.users[0], "lost", ""),
					f.raw([]byte("1"), []byte("{not json")),
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "   ", ""), // empty content
					f.rec(t, newUUID(), f.rooms[0], 999999, "who", ""),     // unknown user
					f.rec(t, newUUID(), f.rooms[0], f.users[0], "b", ""),
				}
			},
			want: []string{"0:1", "0:2"}, inserted: 2, lastSeq: 2,
			deadOffsets: []int64{1, 2, 3, 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 2, 1)
			st := store.New(f.pool, store.Options{})
			ctx := context.Background()
			var prior []store.Record
			if tt.prior != nil {
				prior = tt.prior(f, t)
				if _, err := st.Save(ctx, prior); err != nil {
					t.Fatal(err)
				}
			}
			res, err := st.Save(ctx, tt.batch(f, t, prior))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range res.Messages {
				got = append(got, fmt.Sprintf("0:%d", m.Seq))
				if m.RoomID != fmt.Sprint(f.rooms[0]) {
					t.Fatalf("message of room %s", m.RoomID)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("returned %v, want %v", got, tt.want)
			}
			if res.Inserted != tt.inserted {
				t.Fatalf("inserted %d, want %d", res.Inserted, tt.inserted)
			}
			if n := f.lastSeq(t, f.rooms[0]); n != tt.lastSeq {
				t.Fatalf("last_seq %d, want %d", n, tt.lastSeq)
			}
			if n := len(f.messages(t)); int64(n) != tt.lastSeq {
				t.Fatalf("%d rows, want %d", n, tt.lastSeq)
			}
			dead := f.deadLetters(t)
			if len(dead) != len(tt.deadOffsets) {
				t.Fatalf("dead letters %v, want offsets %v", dead, tt.deadOffsets)
			}
			for _, off := range tt.deadOffsets {
				if dead[off] == "" {
					t.Fatalf("no dead letter at offset %d: %v", off, dead)
				}
			}
		})
	}
}

func TestSaveIsIdempotent(t *testing.T) {
	f := newFixture(t, 1, 2)
	// A batch repeating stored messages is no failed attempt: the first,
	// optimistic try gives way to the look-up at once.
	st := store.New(f.pool, store.Options{OnRetry: func(err error, transient bool, try int) {
		t.Errorf("retry %d (transient %v) after: %v", try, transient, err)
	}})
	ctx := context.Background()
	recs := []store.Record{
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", "x"),
		f.rec(t, newUUID(), f.rooms[1], f.users[0], "b", ""),
		f.raw([]byte("zz"), []byte("nope")),
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "c", ""),
	}
	first, err := st.Save(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := st.Save(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	if again.Inserted != 0 {
		t.Fatalf("second save inserted %d", again.Inserted)
	}
	if fmt.Sprint(first.Messages) != fmt.Sprint(again.Messages) {
		t.Fatalf("second save returned\n%v\nwant\n%v", again.Messages, first.Messages)
	}
	if n := len(f.deadLetters(t)); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
}

func TestSaveFallsBackToOneByOne(t *testing.T) {
	f := newFixture(t, 1, 1)
	ctx := context.Background()
	f.rejectBoom(t)
	var tries []bool
	st := store.New(f.pool, store.Options{
		MaxAttempts: 3,
		MinBackoff:  time.Millisecond,
		OnRetry:     func(_ error, transient bool, _ int) { tries = append(tries, transient) },
	})
	recs := []store.Record{
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "a", ""),
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "boom", ""),
		f.rec(t, newUUID(), f.rooms[0], f.users[0], "b", ""),
	}
	res, err := st.Save(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 2 || res.DeadLetters != 1 || len(res.Messages) != 2 {
		t.Fatalf("got %+v", res)
	}
	if got := fmt.Sprint(seqsOf(res.Messages)); got != fmt.Sprintf("[%d:1 %d:2]", f.rooms[0], f.rooms[0]) {
		t.Fatalf("returned %s", got)
	}
	if len(tries) != 4 { // 3 batch attempts + the record's own
		t.Fatalf("%d failed tries, want 4: %v", len(tries), tries)
	}
	for _, transient := range tries {
		if transient {
			t.Fatalf("a trigger exception was taken for transient")
		}
	}
	dead := f.deadLetters(t)
	if e := dead[recs[1].Offset]; e == "" || len(dead) != 1 {
		t.Fatalf("dead letters %v", dead)
	}
	var attempts int
	if err := f.pool.QueryRow(ctx, `SELECT attempts FROM dead_letters`).Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if attempts != 4 {
		t.Fatalf("attempts %d, want 4", attempts)
	}
}

// TestDeletedUserAfterCaching: the store remembers users it has seen; a
// user deleted afterwards (by an operator, with their messages' room) must
// not wedge the partition: the record is dead-lettered as an unknown user.
func TestDeletedUserAfterCaching(t *testing.T) {
	f := newFixture(t, 2, 2)
	ctx := context.Background()
	s := store.New(f.pool, store.Options{MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if _, err := s.Save(ctx, []store.Record{f.rec(t, newUUID(), f.rooms[0], f.users[1], "hello", "")}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `DELETE FROM rooms WHERE id = $1`, f.rooms[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `DELETE FROM users WHERE id = $1`, f.users[1]); err != nil {
		t.Fatal(err)
	}
	gone := f.rec(t, newUUID(), f.rooms[1], f.users[1], "from a deleted user", "")
	fine := f.rec(t, newUUID(), f.rooms[1], f.users[0], "still here", "")
	res, err := s.Save(ctx, []store.Record{gone, fine})
	if err != nil {
		t.Fatal(err)
	}
	if res.Inserted != 1 || res.DeadLetters != 1 {
		t.Fatalf("inserted %d and dead-lettered %d, want 1 and 1", res.Inserted, res.DeadLetters)
	}
	if d := f.deadLetters(t); !strings.Contains(d[gone.Offset], "user") {
		t.Errorf("dead letter of the deleted user's record: %q", d[gone.Offset])
	}
}
