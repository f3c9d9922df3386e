// Package fleet holds the control plane's domain: workers, pools, desired
// states, commands, alert rules and settings, with their validation rules.
// It does no I/O; the storage, web and notification packages speak to each
// other in these types.
package fleet

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status in the web package.
const (
	EINVALID     = "invalid"            // bad input: 400
	ENOTFOUND    = "not_found"          // 404
	ECONFLICT    = "conflict"           // the request makes no sense in the current state: 409
	ETOOLARGE    = "too_large"          // request body over the limit: 413
	EMETHOD      = "method_not_allowed" // 405
	ETIMEOUT     = "request_timeout"    // the request was not read in time: 408
	EUNAUTH      = "unauthorized"       // missing or wrong token: 401
	EFORBIDDEN   = "forbidden"          // authenticated, but rejected (CSRF): 403
	EUNAVAILABLE = "unavailable"        // a dependency such as Redis is down: 503
	EINTERNAL    = "internal"           // a bug or an unexpected failure: 500
)

// Error is an error meant for the user. Code is the kind of failure, Message
// states what was wrong and what is accepted, and Field names the input at
// fault, when there is one.
type Error struct {
	Code    string
	Message string
	Field   string
	// Dependency names what was unavailable ("redis", "mysql") for an
	// EUNAVAILABLE error; empty means the state store, Redis.
	Dependency string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (field %s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

// Errorf returns an *Error with the given code and field.
func Errorf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the user-facing message of err. Internal errors get a
// generic message so that no implementation detail leaks to the client.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorField returns the input field that err names, or "".
func ErrorField(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// ErrUnavailable is returned by storage when the state store cannot be reached
// in time. The web layer responds with 503 and Retry-After.
var ErrUnavailable = &Error{Code: EUNAVAILABLE, Message: "state store unavailable, retry later"}
