package ws_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/produce"
	"rooms/gateway/internal/ratelimit"
	"rooms/gateway/internal/store"
	"rooms/gateway/internal/ws"
	"rooms/shared/message"
	"rooms/shared/testenv"
)

// env is one gateway's WebSocket server on a loopback port, with real
// PostgreSQL, Redis and an embedded Kafka broker, and a minimal stand-in
// for the worker (consume, store with seq and de-duplication, fan out).
type env struct {
	t      *testing.T
	db     *testenv.Database
	rdb    *redis.Client
	prefix string
	auth   *auth.Auth
	srv    *ws.Server
	addr   string
	room   int64
}

func newEnv(t *testing.T, tune func(*ws.Config)) *env {
	t.Helper()
	return newEnvWith(t, tune, nil)
}

// newEnvWith is newEnv whose Server gets the Deps that wrap returns (for
// fault injection around the real ones).
func newEnvWith(t *testing.T, tune func(*ws.Config), wrap func(ws.Deps) ws.Deps) *env {
	t.Helper()
	return newEnvServing(t, tune, wrap, true)
}

// newEnvServing is newEnvWith with the HTTP server's KeepHijackedConns set
// to keepHijacked (the gateway sets it; ws works either way).
func newEnvServing(t *testing.T, tune func(*ws.Config), wrap func(ws.Deps) ws.Deps, keepHijacked bool) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, db: testenv.Postgres(t)}
	e.rdb, e.prefix = testenv.Redis(t)
	st := store.New(e.db.Pool)
	a, err := auth.New(ctx, auth.Options{
		Store: st, Redis: e.rdb, Prefix: e.prefix, Secret: []byte(strings.Repeat("s", 32)),
		AccessTTL: 15 * time.Minute, RefreshTTL: time.Hour, TicketTTL: 30 * time.Second, HashConcurrency: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.auth = a

	kc := testenv.Kafka(t)
	brokers := kc.ListenAddrs()[0]
	topic := "chat-" + testenv.RandomID(4)
	if err := produce.EnsureTopic(ctx, brokers, topic, 2, 1); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := produce.New(produce.Config{Brokers: brokers, Topic: topic}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	e.startWorker(ctx, brokers, topic)

	cfg := ws.Config{
		GatewayID: "gw-" + testenv.RandomID(3), RedisPrefix: e.prefix,
		AllowedOrigins: []string{"http://allowed.example"},
	}
	if tune != nil {
		tune(&cfg)
	}
	deps := ws.Deps{
		Auth: a, Store: st, Limiter: ratelimit.New(e.rdb, e.prefix), Producer: p, Redis: e.rdb,
	}
	if wrap != nil {
		deps = wrap(deps)
	}
	e.srv = ws.New(cfg, deps, logger)
	// The stack runs gateways with one P, where the fan-out reader writes
	// to idle sockets itself; the tests cover that whatever GOMAXPROCS is
	// (with more Ps, every write takes the queue, as busy sockets do here).
	ws.SetInlineWrites(e.srv, true)
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = e.srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })

	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Server().KeepHijackedConns = keepHijacked
	upgrade := e.srv.Upgrade()
	app.Get("/api/chat/rooms/:id", func(c *fiber.Ctx) error {
		if fws.FastHTTPIsWebSocketUpgrade(c.Context()) {
			return upgrade(c)
		}
		return c.SendStatus(http.StatusNotFound)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ws.Listener(ln)) }()
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_ = e.srv.Drain(dctx)
		_ = app.ShutdownWithTimeout(5 * time.Second)
	})
	e.addr = ln.Addr().String()
	if err := e.db.Pool.QueryRow(ctx, `INSERT INTO rooms (name) VALUES ('general') RETURNING id`).Scan(&e.room); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "fan-out reader", e.srv.Ready)
	return e
}

// startWorker plays the worker's part: consume the topic, store each record
// with the room's next seq unless its client_msg_id is already stored, and
// append the stored message to the room's fan-out stream.
func (e *env) startWorker(ctx context.Context, brokers, topic string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	e.t.Cleanup(func() { <-done; cl.Close() })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				var m message.Message
				if err := json.Unmarshal(r.Value, &m); err != nil {
					e.t.Errorf("worker: decode %s: %v", r.Value, err)
					return
				}
				if err := e.storeAndFanOut(ctx, m); err != nil && ctx.Err() == nil {
					e.t.Errorf("worker: %v", err)
				}
			})
		}
	}()
}

func (e *env) storeAndFanOut(ctx context.Context, m message.Message) error {
	roomID, _ := strconv.ParseInt(m.RoomID, 10, 64)
	userID, _ := strconv.ParseInt(m.UserID, 10, 64)
	created, _ := time.Parse(message.TimeLayout, m.TimeCreated)
	err := pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		var last int64
		if err := tx.QueryRow(ctx, `SELECT last_seq FROM rooms WHERE id = $1 FOR UPDATE`, roomID).Scan(&last); err != nil {
			return err
		}
		var cmid *string
		if m.ClientMsgID != "" {
			cmid = &m.ClientMsgID
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE room_id=$1 AND user_id=$2 AND client_msg_id=$3)`,
				roomID, userID, m.ClientMsgID).Scan(&exists); err != nil {
				return err
			}
			if exists {
				m.Seq = 0
				return nil
			}
		}
		m.Seq = last + 1
		if _, err := tx.Exec(ctx, `INSERT INTO messages (room_id, seq, id, user_id, nickname, content, client_msg_id, time_created)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`, roomID, m.Seq, m.ID, userID, m.Nickname, m.Content, cmid, created); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE rooms SET last_seq = $2 WHERE id = $1`, roomID, m.Seq)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if m.Seq == 0 {
		return nil
	}
	return e.fanOut(ctx, m)
}

func (e *env) fanOut(ctx context.Context, m message.Message) error {
	roomID, _ := strconv.ParseInt(m.RoomID, 10, 64)
	b, _ := json.Marshal(m)
	return e.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: message.FanoutStream(e.prefix, roomID),
		Values: []string{message.FieldKind, message.KindMessage, message.FieldData, string(b)},
	}).Err()
}

// storeDirect inserts n messages by user into the env's room with SQL and
// returns every message of the room, ascending.
func (e *env) storeDirect(user int64, n int) []message.Message {
	e.t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		m := message.Message{
			ID:     fmt.Sprintf("0193a1b2-0000-7000-8000-%012d", time.Now().UnixNano()%1e12+int64(i)),
			RoomID: strconv.FormatInt(e.room, 10), UserID: strconv.FormatInt(user, 10), Nickname: e.nick(user),
			Content: "stored " + strconv.Itoa(i), TimeCreated: message.FormatTime(time.Now()),
		}
		if err := e.storeAndFanOut(ctx, m); err != nil {
			e.t.Fatal(err)
		}
	}
	msgs, err := store.New(e.db.Pool).MessagesAfter(ctx, e.room, 0, 100000)
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

func (e *env) nick(user int64) string {
	var n string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT nickname FROM users WHERE id=$1`, user).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// user creates a user and returns its id and an access token.
func (e *env) user(nickname string) (int64, string) {
	return e.userExpiring(nickname, time.Now().Add(15*time.Minute), "")
}

func (e *env) userExpiring(nickname string, exp time.Time, family string) (int64, string) {
	e.t.Helper()
	var id int64
	if err := e.db.Pool.QueryRow(context.Background(),
		`INSERT INTO users (nickname, password_hash) VALUES ($1, 'x') RETURNING id`, nickname).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	if family == "" {
		family = "00000000-0000-4000-8000-" + fmt.Sprintf("%012d", id)
	}
	tok, err := e.auth.SignAccess(auth.Claims{UserID: id, Nickname: nickname, FamilyID: family, ExpiresAt: exp}, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return id, tok
}

func (e *env) url(room string, query string) string {
	u := "ws://" + e.addr + "/api/chat/rooms/" + room
	if query != "" {
		u += "?" + query
	}
	return u
}

// dial connects with token in the Authorization header; v2 requests the
// rooms.v2 subprotocol.
func (e *env) dial(token string, v2 bool, query string) *client {
	e.t.Helper()
	c, resp, err := e.tryDial(token, v2, query, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.t.Fatalf("dial: %v (status %d)", err, status)
	}
	return c
}

func (e *env) tryDial(token string, v2 bool, query string, h http.Header) (*client, *http.Response, error) {
	d := fws.Dialer{HandshakeTimeout: 10 * time.Second}
	if v2 {
		d.Subprotocols = []string{ws.Subprotocol}
	}
	if h == nil {
		h = http.Header{}
	}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := d.Dial(e.url(strconv.FormatInt(e.room, 10), query), h)
	if err != nil {
		return nil, resp, err
	}
	e.t.Cleanup(func() { conn.Close() })
	return &client{t: e.t, c: conn}, resp, nil
}

type client struct {
	t *testing.T
	c *fws.Conn
}

func (c *client) read() []byte {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, b, err := c.c.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return b
}

// frame reads one JSON object frame.
func (c *client) frame() map[string]any {
	c.t.Helper()
	b := c.read()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("frame %s: %v", b, err)
	}
	return m
}

// next reads frames until one of type typ, skipping presence and typing
// events and acks.
func (c *client) next(typ string) map[string]any {
	c.t.Helper()
	for {
		f := c.frame()
		if f["type"] == typ {
			return f
		}
		if f["type"] != "presence" && f["type"] != "typing" && f["type"] != "ack" {
			c.t.Fatalf("got %v while waiting for %s", f, typ)
		}
	}
}

func (c *client) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	c.sendRaw(string(b))
}

func (c *client) sendRaw(s string) {
	c.t.Helper()
	if err := c.c.WriteMessage(fws.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// closeCode reads until the connection ends and returns the close code.
func (c *client) closeCode() int {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	frames := 0
	for {
		_, _, err := c.c.ReadMessage()
		if err == nil {
			frames++
			continue
		}
		var ce *fws.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		c.t.Fatalf("connection ended without a close frame after %d frames: %v", frames, err)
	}
}
