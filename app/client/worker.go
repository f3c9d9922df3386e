package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"time"
)

const (
	// DefaultInterval is the first heartbeat interval of a Worker without
	// an Interval.
	DefaultInterval = 5 * time.Second

	// DefaultMaxBackoff is the longest wait between retries of a Worker
	// without a MaxBackoff, unless the heartbeat interval or a Retry-After
	// delay is longer.
	DefaultMaxBackoff = time.Minute

	// minServerInterval is the shortest interval a Worker accepts from a
	// response, so that a misconfigured server cannot put its whole fleet
	// into a busy loop.
	minServerInterval = 100 * time.Millisecond

	// jitterFraction spreads each wait uniformly over ±10% so that workers
	// started together do not heartbeat in lockstep.
	jitterFraction = 0.1
)

// Worker is a heartbeat loop that a worker process embeds. Set the exported
// fields, then call Run once. A Worker must not be copied after first use.
type Worker struct {
	Client *Client

	// ID and Pool identify the worker and must match [A-Za-z0-9._-]{1,128}.
	ID   string
	Pool string

	// Host, PID and Version describe the process. Host defaults to
	// os.Hostname and PID to os.Getpid.
	Host    string
	PID     int
	Version string

	// StartedAt is sent as started_at. It defaults to the time Run starts.
	StartedAt time.Time

	// Interval is the wait between heartbeats until the first response
	// (default DefaultInterval). After that the Worker follows the
	// response's heartbeat_interval_seconds, raised to at least 100ms,
	// unless FixedInterval is set.
	Interval      time.Duration
	FixedInterval bool

	// MaxBackoff caps the exponential backoff after temporary errors
	// (default DefaultMaxBackoff). A longer Retry-After is still honoured.
	MaxBackoff time.Duration

	// OnError, when set, is called from Run's goroutine with every failed
	// heartbeat and the delay before the next try, for example to log it.
	OnError func(err error, retryIn time.Duration)

	wakeOnce sync.Once
	wake     chan struct{}
}

// HeartbeatNow makes Run send the next heartbeat at once instead of at the
// end of the current interval, for example because the worker's status has
// just changed. While Run is backing off after an error, the request waits
// until the backoff ends. It never blocks, and several calls before the
// next heartbeat cause a single heartbeat.
func (w *Worker) HeartbeatNow() {
	select {
	case w.wakeChannel() <- struct{}{}:
	default:
	}
}

func (w *Worker) wakeChannel() chan struct{} {
	w.wakeOnce.Do(func() {
		w.wake = make(chan struct{}, 1)
	})
	return w.wake
}

// Run sends a heartbeat at once and then one per interval, each wait spread
// by ±10% jitter, until ctx ends or the server accepts a heartbeat whose
// status is StatusStopped.
//
// Before each heartbeat Run calls status for the worker's current status and
// metrics, and after each accepted heartbeat it calls onDesired with the
// desired state from the response, even when it has not changed. Both run on
// Run's goroutine. A nil status reports StatusRunning without metrics, and a
// nil onDesired is skipped.
//
// After a temporary error (network errors, 429 and 5xx) Run waits the
// interval, then twice that, and so on up to MaxBackoff, and never less than
// the response's Retry-After. After a permanent error (other 4xx, such as
// 400 or 401) it retries at the normal interval, because an operator may fix
// the token or the server while the worker keeps running.
//
// Run returns nil after the stopped heartbeat, ctx.Err() when ctx ends, and
// an error at once when Client, ID or Pool is missing.
func (w *Worker) Run(ctx context.Context, status func() (string, map[string]float64), onDesired func(desired string)) error {
	if err := w.checkFields(); err != nil {
		return err
	}
	wake := w.wakeChannel()
	template := w.heartbeatTemplate()
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	failures := 0
	for {
		// A wake-up request waits while Run backs off, so that it never
		// cuts a Retry-After or backoff delay short.
		wakeOrNil := wake
		if failures > 0 {
			wakeOrNil = nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-wakeOrNil:
			timer.Stop()
		}

		// This heartbeat carries the latest status, which satisfies any
		// wake-up request made before status is read below.
		select {
		case <-wake:
		default:
		}

		hb := template
		hb.Status, hb.Metrics = StatusRunning, nil
		if status != nil {
			hb.Status, hb.Metrics = status()
		}
		hb.SentAt = time.Now()
		resp, err := w.Client.Heartbeat(ctx, hb)

		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			delay, temporary := w.retryDelay(err, interval, failures)
			if temporary {
				failures++
			} else {
				failures = 0
			}
			if w.OnError != nil {
				w.OnError(err, delay)
			}
			timer.Reset(delay)
			continue
		}

		failures = 0
		if !w.FixedInterval && resp.HeartbeatInterval > 0 {
			interval = max(resp.HeartbeatInterval, minServerInterval)
		}
		if onDesired != nil {
			onDesired(resp.DesiredState)
		}
		if hb.Status == StatusStopped {
			return nil
		}
		timer.Reset(jitter(interval))
	}
}

func (w *Worker) checkFields() error {
	var errs []error
	if w.Client == nil {
		errs = append(errs, errors.New("worker: Client is missing"))
	}
	if w.ID == "" {
		errs = append(errs, errors.New("worker: ID is missing"))
	}
	if w.Pool == "" {
		errs = append(errs, errors.New("worker: Pool is missing"))
	}
	return errors.Join(errs...)
}

// heartbeatTemplate returns the fields that stay the same in every heartbeat.
func (w *Worker) heartbeatTemplate() Heartbeat {
	hb := Heartbeat{
		ID:        w.ID,
		Pool:      w.Pool,
		Host:      w.Host,
		PID:       w.PID,
		Version:   w.Version,
		StartedAt: w.StartedAt,
	}
	if hb.Host == "" {
		hb.Host, _ = os.Hostname()
	}
	if hb.PID == 0 {
		hb.PID = os.Getpid()
	}
	if hb.StartedAt.IsZero() {
		hb.StartedAt = time.Now()
	}
	return hb
}

// retryDelay returns the wait before retrying after err, which follows
// failures earlier temporary errors in a row, and whether err is temporary.
func (w *Worker) retryDelay(err error, interval time.Duration, failures int) (time.Duration, bool) {
	var apiErr *APIError
	if errors.As(err, &apiErr) && !apiErr.Temporary() {
		return jitter(interval), false
	}

	maxBackoff := w.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = DefaultMaxBackoff
	}
	maxBackoff = max(maxBackoff, interval)

	backoff := interval
	for i := 0; i < failures && backoff < maxBackoff; i++ {
		backoff *= 2
	}
	delay := jitter(min(backoff, maxBackoff))

	// Retry-After is a lower bound, so its jitter only adds time.
	if apiErr != nil && apiErr.RetryAfter > delay {
		delay = apiErr.RetryAfter + time.Duration(rand.Float64()*jitterFraction*float64(apiErr.RetryAfter))
	}
	return delay, true
}

// jitter returns d spread uniformly over d ± 10%.
func jitter(d time.Duration) time.Duration {
	factor := 1 - jitterFraction + 2*jitterFraction*rand.Float64()
	return time.Duration(float64(d) * factor)
}
