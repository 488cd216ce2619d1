package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"rooms/shared/message"
)

// Room is a chat room. LastSeq is the highest seq stored in it (0 for none).
type Room struct {
	ID          int64
	Name        string
	TimeCreated time.Time
	LastSeq     int64
}

// CreateRoom inserts a room named name.
func (s *Store) CreateRoom(ctx context.Context, name string) (Room, error) {
	r := Room{Name: name}
	err := s.pool.QueryRow(ctx,
		`INSERT INTO rooms (name) VALUES ($1) RETURNING id, time_created, last_seq`, name).
		Scan(&r.ID, &r.TimeCreated, &r.LastSeq)
	if err != nil {
		return Room{}, fmt.Errorf("insert room: %w", err)
	}
	return r, nil
}

// Room returns the room with the given id, or ErrNotFound.
func (s *Store) Room(ctx context.Context, id int64) (Room, error) {
	var r Room
	err := s.pool.QueryRow(ctx,
		`SELECT id, name, time_created, last_seq FROM rooms WHERE id = $1`, id).
		Scan(&r.ID, &r.Name, &r.TimeCreated, &r.LastSeq)
	if errors.Is(err, pgx.ErrNoRows) {
		return Room{}, ErrNotFound
	}
	if err != nil {
		return Room{}, fmt.Errorf("select room %d: %w", id, err)
	}
	return r, nil
}

// Rooms returns every room ordered by id.
func (s *Store) Rooms(ctx context.Context) ([]Room, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, time_created, last_seq FROM rooms ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("select rooms: %w", err)
	}
	rooms, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Room, error) {
		var r Room
		err := row.Scan(&r.ID, &r.Name, &r.TimeCreated, &r.LastSeq)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("select rooms: %w", err)
	}
	return rooms, nil
}

const messageColumns = `id::text, seq, room_id, user_id, nickname, content, time_created, client_msg_id`

// MessagesAfter returns up to limit messages of roomID with seq > afterSeq,
// ascending by seq. It always reads the primary: resume replay and gap
// repair rely on it returning every stored seq (HistoryAfter is the same
// read for history).
func (s *Store) MessagesAfter(ctx context.Context, roomID, afterSeq int64, limit int) ([]message.Message, error) {
	return s.messages(ctx, afterSQL, false, roomID, afterSeq, limit)
}

const afterSQL = `SELECT ` + messageColumns + ` FROM messages
		WHERE room_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3`

// MessagesBefore returns the newest limit messages of roomID with
// seq < beforeSeq, ascending by seq. It is a history read: it uses the
// replica while that is healthy (see WithReplica), so it may miss the
// newest messages.
func (s *Store) MessagesBefore(ctx context.Context, roomID, beforeSeq int64, limit int) ([]message.Message, error) {
	return s.history(ctx, `SELECT `+messageColumns+` FROM messages
		WHERE room_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3`, true, roomID, beforeSeq, limit)
}

// LatestMessages returns the newest limit messages of roomID, ascending by
// seq. While the replica is healthy it reads them there and then asks the
// primary only for what the replica has not replayed yet (see withTip),
// so the result is as fresh as a read on the primary.
func (s *Store) LatestMessages(ctx context.Context, roomID int64, limit int) ([]message.Message, error) {
	if msgs, err := s.onReplica(ctx, latestSQL, true, roomID, limit); err == nil {
		return s.withTip(ctx, msgs, roomID, limit)
	}
	return s.messages(ctx, latestSQL, true, roomID, limit)
}

const latestSQL = `SELECT ` + messageColumns + ` FROM messages
		WHERE room_id = $1 ORDER BY seq DESC LIMIT $2`

func (s *Store) messages(ctx context.Context, sql string, reverse bool, args ...any) ([]message.Message, error) {
	return queryMessages(ctx, s.pool, sql, reverse, args...)
}

// queryMessages runs sql, which selects messageColumns, on q; reverse turns
// a descending result into ascending order.
func queryMessages(ctx context.Context, q querier, sql string, reverse bool, args ...any) ([]message.Message, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("select messages: %w", err)
	}
	msgs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (message.Message, error) {
		var (
			m              message.Message
			roomID, userID int64
			created        time.Time
			clientMsgID    *string
		)
		if err := row.Scan(&m.ID, &m.Seq, &roomID, &userID, &m.Nickname, &m.Content, &created, &clientMsgID); err != nil {
			return m, err
		}
		m.RoomID = strconv.FormatInt(roomID, 10)
		m.UserID = strconv.FormatInt(userID, 10)
		m.TimeCreated = message.FormatTime(created)
		if clientMsgID != nil {
			m.ClientMsgID = *clientMsgID
		}
		return m, nil
	})
	if err != nil {
		return nil, fmt.Errorf("select messages: %w", err)
	}
	if reverse {
		for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
			msgs[i], msgs[j] = msgs[j], msgs[i]
		}
	}
	if msgs == nil {
		msgs = []message.Message{}
	}
	return msgs, nil
}
