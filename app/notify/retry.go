package notify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Retrier defaults. The backoff doubles from DefaultInitialBackoff up to
// DefaultMaxBackoff, so the default 6 attempts span about 31 s of waiting.
const (
	DefaultMaxAttempts    = 6
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultMaxRetryAfter  = 5 * time.Minute
)

// Retrier sends notifications through one Notifier, retrying with
// exponential backoff while the notifier reports that a retry may help.
// Set its fields before the first Send.
type Retrier struct {
	notifier Notifier
	metrics  *Metrics
	log      *FailureLog

	// MaxAttempts bounds the calls to Notify for one notification.
	MaxAttempts int
	// InitialBackoff is the wait after the first failure; each later wait
	// doubles, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// MaxRetryAfter bounds how long a RetryAfterError may make Send wait.
	// Send gives up on a longer request rather than sending before the
	// server allows it.
	MaxRetryAfter time.Duration

	// Now and Sleep are the clock; tests replace them so that nothing
	// sleeps. Sleep returns ctx.Err() when ctx ends first. Now must be the
	// wall clock whenever ctx carries a deadline, because Send compares
	// the two.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// NewRetrier returns a Retrier for notifier with the default limits. It
// records each attempt in metrics and each failure in log; either may be nil.
func NewRetrier(notifier Notifier, metrics *Metrics, log *FailureLog) *Retrier {
	metrics.InitChannel(notifier.Name())
	return &Retrier{
		notifier:       notifier,
		metrics:        metrics,
		log:            log,
		MaxAttempts:    DefaultMaxAttempts,
		InitialBackoff: DefaultInitialBackoff,
		MaxBackoff:     DefaultMaxBackoff,
		MaxRetryAfter:  DefaultMaxRetryAfter,
		Now:            time.Now,
		Sleep:          sleep,
	}
}

// Name returns the name of the channel the Retrier sends to.
func (r *Retrier) Name() string { return r.notifier.Name() }

// Send delivers n, retrying until it succeeds, the notifier reports that a
// retry cannot help, MaxAttempts calls were made, or the next wait would
// pass ctx's deadline. An empty notification sends nothing.
//
// Send reports each failure to the Retrier's FailureLog, which logs it, so
// callers need not log the returned error again. The error names the
// channel and wraps the notifier's last error.
func (r *Retrier) Send(ctx context.Context, n fleet.Notification) error {
	if n.Empty() {
		return nil
	}
	channel := r.notifier.Name()
	backoff := r.InitialBackoff

	for attempt := 1; ; attempt++ {
		start := r.Now()
		retry, err := r.notifier.Notify(ctx, n)
		r.metrics.Observe(channel, r.Now().Sub(start), err)
		if err == nil {
			r.log.Succeeded(channel)
			return nil
		}

		wait, giveUpReason := r.nextWait(ctx, attempt, retry, backoff, err)
		if giveUpReason == "" {
			r.log.Retrying(channel, attempt, wait, err)
			sleepErr := r.Sleep(ctx, wait)
			if sleepErr == nil {
				backoff = min(2*backoff, r.MaxBackoff)
				continue
			}
			giveUpReason = "stopped waiting to retry: " + sleepErr.Error()
		}
		r.log.GaveUp(channel, attempt, giveUpReason, err)
		return fmt.Errorf("notify %s: giving up after attempt %d, %s: %w", channel, attempt, giveUpReason, err)
	}
}

// nextWait returns how long to wait before the attempt after attempt, or the
// reason for Send to give up instead. The wait is the backoff, raised to the
// server's Retry-After when err carries one.
func (r *Retrier) nextWait(ctx context.Context, attempt int, retry bool, backoff time.Duration, err error) (wait time.Duration, giveUpReason string) {
	if !retry {
		return 0, "not retryable"
	}
	if attempt >= r.MaxAttempts {
		return 0, "out of attempts"
	}

	wait = backoff
	var retryAfter *RetryAfterError
	if errors.As(err, &retryAfter) {
		if retryAfter.After > r.MaxRetryAfter {
			return 0, fmt.Sprintf("Retry-After %s is over the maximum %s", retryAfter.After, r.MaxRetryAfter)
		}
		wait = max(wait, retryAfter.After)
	}

	if deadline, ok := ctx.Deadline(); ok && r.Now().Add(wait).After(deadline) {
		return 0, fmt.Sprintf("the retry in %s would pass the deadline", wait)
	}
	return wait, ""
}

// sleep waits for d or until ctx ends, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
