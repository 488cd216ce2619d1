package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// User is a registered account.
type User struct {
	ID           int64
	Nickname     string
	PasswordHash string
	TimeCreated  time.Time
}

// CreateUser inserts a user. It returns ErrNicknameTaken when the nickname is
// in use, compared case-insensitively.
func (s *Store) CreateUser(ctx context.Context, nickname, passwordHash string) (User, error) {
	u := User{Nickname: nickname, PasswordHash: passwordHash}
	err := s.pool.QueryRow(ctx,
		`INSERT INTO users (nickname, password_hash) VALUES ($1, $2) RETURNING id, time_created`,
		nickname, passwordHash).Scan(&u.ID, &u.TimeCreated)
	if isUniqueViolation(err) {
		return User{}, ErrNicknameTaken
	}
	if err != nil {
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	return u, nil
}

// UserByNickname finds a user by nickname, case-insensitively.
func (s *Store) UserByNickname(ctx context.Context, nickname string) (User, error) {
	return s.user(ctx, `WHERE lower(nickname) = lower($1)`, nickname)
}

// UserByID finds a user by id.
func (s *Store) UserByID(ctx context.Context, id int64) (User, error) {
	return s.user(ctx, `WHERE id = $1`, id)
}

func (s *Store) user(ctx context.Context, where string, arg any) (User, error) {
	var u User
	err := s.pool.QueryRow(ctx,
		`SELECT id, nickname, password_hash, time_created FROM users `+where, arg).
		Scan(&u.ID, &u.Nickname, &u.PasswordHash, &u.TimeCreated)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("select user: %w", err)
	}
	return u, nil
}
