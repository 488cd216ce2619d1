package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// maxTicketLen bounds the length of a ticket looked up in Redis.
const maxTicketLen = 128

func (a *Auth) ticketKey(ticket string) string { return a.prefix + "ticket:" + ticket }

// IssueTicket stores a one-time WebSocket ticket for c, valid for TicketTTL
// on any gateway, and returns it.
func (a *Auth) IssueTicket(ctx context.Context, c Claims) (string, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("issue ticket: %w", err)
	}
	ticket := randomToken(32)
	if err := a.rdb.Set(ctx, a.ticketKey(ticket), data, a.ticketTTL).Err(); err != nil {
		return "", fmt.Errorf("issue ticket: %w", err)
	}
	return ticket, nil
}

// RedeemTicket consumes a ticket (GETDEL, so it works once across every
// gateway) and returns the claims it was issued for, or ErrInvalidTicket.
func (a *Auth) RedeemTicket(ctx context.Context, ticket string) (Claims, error) {
	if ticket == "" || len(ticket) > maxTicketLen {
		return Claims{}, ErrInvalidTicket
	}
	data, err := a.rdb.GetDel(ctx, a.ticketKey(ticket)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Claims{}, ErrInvalidTicket
	}
	if err != nil {
		return Claims{}, fmt.Errorf("redeem ticket: %w", err)
	}
	var c Claims
	if err := json.Unmarshal(data, &c); err != nil || c.UserID <= 0 {
		return Claims{}, ErrInvalidTicket
	}
	return c, nil
}
