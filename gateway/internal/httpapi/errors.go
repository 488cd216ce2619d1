package httpapi

import (
	"context"
	"errors"
	"log/slog"

	"github.com/gofiber/fiber/v2"

	"rooms/gateway/internal/auth"
	"rooms/gateway/internal/store"
	"rooms/shared/retry"
)

// Error kinds. A handler returns an *Error of one of these kinds (or a
// domain error that errorFor translates); errorFor is the one place that
// decides statuses.
const (
	KindInvalidJSON     = "invalid_json"
	KindValidation      = "validation_failed"
	KindUnauthorized    = "unauthorized"
	KindForbiddenOrigin = "forbidden_origin"
	KindNotFound        = "not_found"
	KindNicknameTaken   = "nickname_taken"
	KindTooLarge        = "payload_too_large"
	KindRateLimited     = "rate_limited"
	KindUnavailable     = "unavailable"
	KindInternal        = "internal_error"

	// Kinds of protocol-level failures Fiber reports, outside API.md's table.
	KindMethodNotAllowed = "method_not_allowed"
	KindBadRequest       = "bad_request"
	KindTimeout          = "request_timeout"
	KindHeaderTooLarge   = "header_too_large"
)

var statusOf = map[string]int{
	KindInvalidJSON:      fiber.StatusBadRequest,
	KindValidation:       fiber.StatusBadRequest,
	KindBadRequest:       fiber.StatusBadRequest,
	KindUnauthorized:     fiber.StatusUnauthorized,
	KindForbiddenOrigin:  fiber.StatusForbidden,
	KindNotFound:         fiber.StatusNotFound,
	KindMethodNotAllowed: fiber.StatusMethodNotAllowed,
	KindTimeout:          fiber.StatusRequestTimeout,
	KindNicknameTaken:    fiber.StatusConflict,
	KindTooLarge:         fiber.StatusRequestEntityTooLarge,
	KindHeaderTooLarge:   fiber.StatusRequestHeaderFieldsTooLarge,
	KindRateLimited:      fiber.StatusTooManyRequests,
	KindUnavailable:      fiber.StatusServiceUnavailable,
	KindInternal:         fiber.StatusInternalServerError,
}

// Error is an API error with its kind (the wire code) and a message safe to
// show to clients.
type Error struct {
	Kind    string
	Message string
	// RetryAfter, in whole seconds, is sent as Retry-After when positive.
	RetryAfter int
}

func (e *Error) Error() string { return e.Kind + ": " + e.Message }

// NewError returns an *Error of kind with message.
func NewError(kind, message string) *Error { return &Error{Kind: kind, Message: message} }

func validation(message string) *Error { return NewError(KindValidation, message) }

var errNotFound = NewError(KindNotFound, "not found")

// errDependency answers a request that failed because PostgreSQL or Redis
// could not answer in time (retry.Transient).
var errDependency = &Error{Kind: KindUnavailable, Message: "a service this request needs is not answering right now; try again", RetryAfter: 1}

// errorFor translates any error into the *Error to answer with. The boolean
// is true when err must be logged: a server fault (kind internal_error,
// logged as an error) or a dependency that did not answer (unavailable,
// logged as a warning).
func errorFor(err error) (*Error, bool) {
	var e *Error
	var fe *fiber.Error
	switch {
	case errors.As(err, &e):
		return e, e.Kind == KindInternal
	case errors.Is(err, auth.ErrInvalidCredentials):
		return NewError(KindUnauthorized, "invalid nickname or password"), false
	case errors.Is(err, auth.ErrInvalidToken):
		return NewError(KindUnauthorized, "missing, invalid or expired access token"), false
	case errors.Is(err, auth.ErrInvalidRefresh):
		return NewError(KindUnauthorized, "invalid, expired or revoked refresh token"), false
	case errors.Is(err, auth.ErrInvalidTicket):
		return NewError(KindUnauthorized, "invalid, expired or used ticket"), false
	case errors.Is(err, store.ErrNotFound):
		return errNotFound, false
	case errors.Is(err, store.ErrNicknameTaken):
		return NewError(KindNicknameTaken, "nickname is already taken"), false
	case errors.As(err, &fe):
		switch fe.Code {
		case fiber.StatusNotFound:
			return errNotFound, false
		case fiber.StatusMethodNotAllowed:
			return NewError(KindMethodNotAllowed, "method not allowed"), false
		case fiber.StatusRequestEntityTooLarge:
			return NewError(KindTooLarge, "request body is larger than 64 KiB"), false
		case fiber.StatusRequestTimeout:
			return NewError(KindTimeout, "request timed out"), false
		case fiber.StatusRequestHeaderFieldsTooLarge:
			return NewError(KindHeaderTooLarge, "request headers are too large"), false
		case fiber.StatusServiceUnavailable:
			return NewError(KindUnavailable, "service unavailable"), false
		}
		if fe.Code >= 400 && fe.Code < 500 {
			return NewError(KindBadRequest, "bad request"), false
		}
	case retry.Transient(err):
		// PostgreSQL or Redis unreachable, restarting, out of connections
		// or slower than the request's deadline: the request may succeed
		// if tried again, and nothing about it is wrong.
		return errDependency, true
	}
	return NewError(KindInternal, "internal server error"), true
}

// errorHandler is Fiber's ErrorHandler: it answers every error as
// {"code","message"} with the status of its kind, and logs server faults.
func errorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		e, fault := errorFor(err)
		status := statusOf[e.Kind]
		if status == 0 {
			status = fiber.StatusInternalServerError
		}
		if fault {
			level := slog.LevelError
			if e.Kind != KindInternal {
				level = slog.LevelWarn
			}
			log.Log(context.Background(), level, "request failed", "method", c.Method(), "path", c.Path(), "request_id", RequestID(c), "err", err)
		}
		if e.RetryAfter > 0 {
			c.Set(fiber.HeaderRetryAfter, itoa(e.RetryAfter))
		}
		return c.Status(status).JSON(fiber.Map{"code": e.Kind, "message": e.Message})
	}
}
