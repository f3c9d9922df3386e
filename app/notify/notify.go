// Package notify sends alert notifications to on-call engineers. Each
// channel (Slack, email) is a subpackage that implements Notifier. This
// package retries them with backoff, counts every attempt in Prometheus and
// logs failures once per change of error.
package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Notifier sends one notification to one channel.
type Notifier interface {
	// Notify sends n once. With a non-nil error, retry is true when the
	// same call may succeed later: network errors, timeouts, rate limits,
	// HTTP 5xx and SMTP 4xx replies. It is false when only a change of
	// configuration or input can help, as for template, address and
	// authentication errors.
	Notify(ctx context.Context, n fleet.Notification) (retry bool, err error)
	// Name returns the channel name used in metric labels and logs, such as
	// "slack" or "email".
	Name() string
}

// RetryAfterError is returned, possibly wrapped, by a notifier whose server
// asked it to wait, such as Slack's HTTP 429 with Retry-After. The retrier
// waits at least After before the next attempt.
type RetryAfterError struct {
	After time.Duration
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("rate limited: retry after %s", e.After)
}

// Reason is the failure reason label of
// controlplane_notification_failures_total. The set is fixed so that the
// metric has a bounded number of series.
type Reason string

const (
	ReasonTimeout     Reason = "timeout"      // a request or connection timed out
	ReasonNetwork     Reason = "network"      // connection refused or reset, DNS failure
	ReasonHTTP4xx     Reason = "http_4xx"     // the server rejected the request
	ReasonHTTP5xx     Reason = "http_5xx"     // the server failed
	ReasonRateLimited Reason = "rate_limited" // HTTP 429
	ReasonSMTP        Reason = "smtp"         // the SMTP server replied with an error code
	ReasonTemplate    Reason = "template"     // the message could not be rendered
	ReasonConfig      Reason = "config"       // bad address, credentials, TLS mode or URL
)

// Reasons lists every Reason, for initialising metric series.
var Reasons = []Reason{
	ReasonTimeout, ReasonNetwork, ReasonHTTP4xx, ReasonHTTP5xx,
	ReasonRateLimited, ReasonSMTP, ReasonTemplate, ReasonConfig,
}

// ReasonError attaches a failure Reason to an error.
type ReasonError struct {
	Reason Reason
	Err    error
}

func (e *ReasonError) Error() string { return e.Err.Error() }
func (e *ReasonError) Unwrap() error { return e.Err }

// WithReason returns err tagged with reason, or nil when err is nil.
func WithReason(reason Reason, err error) error {
	if err == nil {
		return nil
	}
	return &ReasonError{Reason: reason, Err: err}
}

// ReasonOf returns the failure reason of err: the Reason of the first
// ReasonError in its chain, else rate_limited for a RetryAfterError, timeout
// for a deadline or a net.Error timeout, and network for anything else.
func ReasonOf(err error) Reason {
	var reasonErr *ReasonError
	if errors.As(err, &reasonErr) {
		return reasonErr.Reason
	}
	var retryAfter *RetryAfterError
	if errors.As(err, &retryAfter) {
		return ReasonRateLimited
	}
	if IsTimeout(err) {
		return ReasonTimeout
	}
	return ReasonNetwork
}

// IsTimeout reports whether err is a context deadline or a net.Error that
// timed out.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// ReasonForStatus returns the failure reason for an HTTP status code that is
// not a success: rate_limited for 429, else http_4xx or http_5xx. Any other
// code returns config, because an unfollowed redirect usually means a wrong
// URL.
func ReasonForStatus(code int) Reason {
	switch {
	case code == 429:
		return ReasonRateLimited
	case code >= 400 && code < 500:
		return ReasonHTTP4xx
	case code >= 500:
		return ReasonHTTP5xx
	default:
		return ReasonConfig
	}
}
