package httpapi

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"rooms/gateway/internal/auth"
)

type credentials struct {
	Nickname string `json:"nickname"`
	Password string `json:"password"`
}

type refreshBody struct {
	RefreshToken string `json:"refresh_token"`
}

type userJSON struct {
	UserID   string `json:"user_id"`
	Nickname string `json:"nickname"`
}

type sessionJSON struct {
	UserID       string `json:"user_id"`
	Nickname     string `json:"nickname"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
}

func sessionOf(s auth.Session) sessionJSON {
	return sessionJSON{
		UserID:       strconv.FormatInt(s.UserID, 10),
		Nickname:     s.Nickname,
		AccessToken:  s.AccessToken,
		RefreshToken: s.RefreshToken,
		ExpiresIn:    int64(s.ExpiresIn / time.Second),
	}
}

// limitAuth applies the login/register limits per client IP and per
// nickname (lower-cased).
func (s *Server) limitAuth(c *fiber.Ctx, action, nickname string) error {
	checks := []struct {
		key   string
		limit func() (bool, time.Duration, error)
	}{
		{"ip", func() (bool, time.Duration, error) {
			return s.o.Limiter.Allow(c.UserContext(), action+":ip:"+s.ClientIP(c), s.o.IPLimit)
		}},
		{"nickname", func() (bool, time.Duration, error) {
			return s.o.Limiter.Allow(c.UserContext(), action+":nick:"+strings.ToLower(nickname), s.o.NicknameLimit)
		}},
	}
	for _, ch := range checks {
		ok, retry, err := ch.limit()
		if err != nil {
			s.log.Error("rate limit check failed", "action", action, "request_id", RequestID(c), "err", err)
			return NewError(KindUnavailable, "rate limiter unavailable")
		}
		if !ok {
			if action == "login" {
				s.o.Metrics.RateLimitedLogin.Inc()
			} else {
				s.o.Metrics.RateLimitedRegister.Inc()
			}
			secs := int(math.Ceil(retry.Seconds()))
			if secs < 1 {
				secs = 1
			}
			return &Error{Kind: KindRateLimited, Message: "too many attempts, retry later", RetryAfter: secs}
		}
	}
	return nil
}

func (s *Server) register(c *fiber.Ctx) error {
	var in credentials
	if err := decode(c, &in); err != nil {
		return err
	}
	if err := validNickname(in.Nickname); err != nil {
		return err
	}
	if err := validPassword(in.Password); err != nil {
		return err
	}
	if err := s.limitAuth(c, "register", in.Nickname); err != nil {
		return err
	}
	u, err := s.o.Auth.Register(c.UserContext(), in.Nickname, in.Password)
	if err != nil {
		return err
	}
	return c.JSON(userJSON{UserID: strconv.FormatInt(u.ID, 10), Nickname: u.Nickname})
}

func (s *Server) login(c *fiber.Ctx) error {
	var in credentials
	if err := decode(c, &in); err != nil {
		return err
	}
	if in.Nickname == "" {
		return validation("nickname is required")
	}
	if in.Password == "" {
		return validation("password is required")
	}
	if err := s.limitAuth(c, "login", in.Nickname); err != nil {
		return err
	}
	// No account can have a nickname or password outside the rules, so
	// such input is answered like a wrong password without touching the
	// database or spending a hash on an oversized input.
	if validNickname(in.Nickname) != nil || utf8.RuneCountInString(in.Password) > 128 {
		return auth.ErrInvalidCredentials
	}
	sess, err := s.o.Auth.Login(c.UserContext(), in.Nickname, in.Password)
	if err != nil {
		return err
	}
	return c.JSON(sessionOf(sess))
}

func (s *Server) refresh(c *fiber.Ctx) error {
	var in refreshBody
	if err := decode(c, &in); err != nil {
		return err
	}
	if in.RefreshToken == "" {
		return validation("refresh_token is required")
	}
	sess, err := s.o.Auth.Refresh(c.UserContext(), in.RefreshToken)
	if err != nil {
		return err
	}
	return c.JSON(sessionOf(sess))
}

func (s *Server) logout(c *fiber.Ctx) error {
	var in refreshBody
	if err := decode(c, &in); err != nil {
		return err
	}
	if in.RefreshToken == "" {
		return validation("refresh_token is required")
	}
	if err := s.o.Auth.Logout(c.UserContext(), in.RefreshToken); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) me(c *fiber.Ctx) error {
	cl := ClaimsOf(c)
	return c.JSON(userJSON{UserID: strconv.FormatInt(cl.UserID, 10), Nickname: cl.Nickname})
}

func (s *Server) wsTicket(c *fiber.Ctx) error {
	ticket, err := s.o.Auth.IssueTicket(c.UserContext(), ClaimsOf(c))
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"ticket": ticket, "expires_in": int64(s.o.Auth.TicketTTL() / time.Second)})
}
