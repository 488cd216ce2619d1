package gen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// User is a benchmark account. Password and Refresh are kept in the user
// cache so later runs against the same database skip the (deliberately
// slow) password hashes of register and login.
type User struct {
	ID       string `json:"user_id"`
	Nickname string `json:"nickname"`
	Password string `json:"password"`
	Refresh  string `json:"refresh_token"`
	// Access is the current access token (not cached: it lives 15 minutes).
	Access string `json:"-"`
	// Obtained is when Access was issued.
	Obtained time.Time `json:"-"`
}

// StatusError is a REST answer other than the expected one.
type StatusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// API calls the REST API of one or more gateways.
type API struct {
	// Bases are the gateways' base URLs (http://host:port); calls are
	// spread over them.
	Bases []string
	// Sources are local IPs to send from, spread over the users: the
	// per-IP limit on login and register then applies per simulated client
	// address, as it would for real clients. Empty: the system's choice.
	Sources []net.IP

	mu      sync.Mutex
	clients map[string]*http.Client
}

// client returns the HTTP client bound to source (nil for any).
func (a *API) client(source net.IP) *http.Client {
	key := source.String()
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[key]; ok {
		return c
	}
	if a.clients == nil {
		a.clients = map[string]*http.Client{}
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if source != nil {
		d.LocalAddr = &net.TCPAddr{IP: source}
	}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	a.clients[key] = c
	return c
}

// source is the local IP of the i-th user (nil when not spreading).
func (a *API) source(i int) net.IP {
	if len(a.Sources) == 0 {
		return nil
	}
	return a.Sources[i%len(a.Sources)]
}

// base is the gateway of the i-th user or client.
func (a *API) base(i int) string { return a.Bases[i%len(a.Bases)] }

// do sends a JSON request and decodes a 200 answer into out.
func (a *API) do(ctx context.Context, i int, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base(i)+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.client(a.source(i)).Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

type session struct {
	UserID       string `json:"user_id"`
	Nickname     string `json:"nickname"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func (u *User) take(s session) {
	u.ID, u.Access, u.Refresh, u.Obtained = s.UserID, s.AccessToken, s.RefreshToken, time.Now()
}

// Login logs u in (the i-th user), registering it when it does not exist.
// A user never seen before (no id) is registered first: each call spends a
// password hash on the server, and a login of an unknown nickname would
// spend one for nothing.
func (a *API) Login(ctx context.Context, i int, u *User) error {
	creds := map[string]string{"nickname": u.Nickname, "password": u.Password}
	var se *StatusError
	if u.ID == "" {
		err := a.do(ctx, i, "POST", "/api/user/register", "", creds, nil)
		if err != nil && (!errors.As(err, &se) || se.Status != http.StatusConflict) {
			return err
		}
	}
	var s session
	err := a.do(ctx, i, "POST", "/api/user/login", "", creds, &s)
	if errors.As(err, &se) && se.Status == http.StatusUnauthorized {
		if err := a.do(ctx, i, "POST", "/api/user/register", "", creds, nil); err != nil {
			return err
		}
		err = a.do(ctx, i, "POST", "/api/user/login", "", creds, &s)
	}
	if err != nil {
		return err
	}
	u.take(s)
	return nil
}

// Refresh renews u's tokens with its refresh token (cheap: no password
// hash), falling back to Login when the refresh token is not accepted.
func (a *API) Refresh(ctx context.Context, i int, u *User) error {
	if u.Refresh != "" {
		var s session
		err := a.do(ctx, i, "POST", "/api/user/refresh", "", map[string]string{"refresh_token": u.Refresh}, &s)
		if err == nil {
			u.take(s)
			return nil
		}
		var se *StatusError
		if !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
			return err
		}
	}
	return a.Login(ctx, i, u)
}

// CreateRoom creates a room and returns its id.
func (a *API) CreateRoom(ctx context.Context, i int, u *User, name string) (string, error) {
	var r struct {
		ID string `json:"id"`
	}
	err := a.do(ctx, i, "POST", "/api/chat/rooms", u.Access, map[string]string{"name": name}, &r)
	return r.ID, err
}

// RoomLastSeq returns a room's last_seq.
func (a *API) RoomLastSeq(ctx context.Context, i int, u *User, roomID string) (int64, error) {
	var r struct {
		LastSeq int64 `json:"last_seq"`
	}
	err := a.do(ctx, i, "GET", "/api/chat/rooms/"+roomID, u.Access, nil, &r)
	return r.LastSeq, err
}

// userCache is the file of cached benchmark users.
type userCache struct {
	Users []*User `json:"users"`
}

// Users returns every cached user of the cache file path (when it exists),
// completed with new ones (nicknames prefix + number) to at least n; the
// first n are logged in. Tokens are renewed with parallel calls; the cache
// is rewritten with the rotated refresh tokens, also when an error is
// returned.
func (a *API) Users(ctx context.Context, path, prefix string, n, parallel int) ([]*User, error) {
	var cache userCache
	if raw, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(raw, &cache); err != nil {
			return nil, fmt.Errorf("read user cache %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	users := cache.Users
	for i := len(users); i < n; i++ {
		users = append(users, &User{Nickname: prefix + strconv.Itoa(i), Password: "bench-password-" + strconv.Itoa(i)})
	}
	err := a.RenewAll(ctx, users[:n], parallel)
	if serr := saveUsers(path, users); serr != nil && err == nil {
		err = serr
	}
	return users, err
}

// RenewAll refreshes (or logs in) every user with parallel calls.
func (a *API) RenewAll(ctx context.Context, users []*User, parallel int) error {
	if parallel < 1 {
		parallel = 1
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for range parallel {
		wg.Go(func() {
			for i := range next {
				if err := a.Refresh(ctx, i, users[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("user %s: %w", users[i].Nickname, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range users {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// SaveUsers writes the user cache (mode 0600: it holds credentials of
// throwaway local accounts).
func SaveUsers(path string, users []*User) error { return saveUsers(path, users) }

func saveUsers(path string, users []*User) error {
	raw, err := json.MarshalIndent(userCache{Users: users}, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Ready checks a gateway's /readyz.
func Ready(ctx context.Context, base string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: status %d", resp.StatusCode)
	}
	return nil
}
