package notify

import (
	"log/slog"
	"sync"
	"time"
)

// FailureLog logs notification failures once per change of error text per
// channel, so that a flapping SMTP server or a Slack outage writes a few
// lines and not one per attempt. A retried failure is logged at Warn, a
// failure that was given up at Error, and the first success after failures
// at Info. A nil *FailureLog logs nothing. It is safe for concurrent use.
type FailureLog struct {
	logger *slog.Logger

	mu       sync.Mutex
	channels map[string]*failureState
}

// failureState is the failure history of one channel since its last
// success.
type failureState struct {
	text    string // error text of the latest failure
	warned  bool   // a Warn line was written for text
	errored bool   // an Error line was written for text
	// suppressed counts the failures with text that were not logged.
	suppressed int
	// failures counts every failed attempt since the last success.
	failures int
}

// NewFailureLog returns a FailureLog that writes to logger.
func NewFailureLog(logger *slog.Logger) *FailureLog {
	return &FailureLog{logger: logger, channels: make(map[string]*failureState)}
}

// Retrying records a failed attempt that will be retried after wait.
func (l *FailureLog) Retrying(channel string, attempt int, wait time.Duration, err error) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()

	state, suppressed := l.record(channel, err)
	if state.warned {
		state.suppressed++
		return
	}
	state.warned = true
	l.logger.Warn("notification failed, will retry", withRepeats(suppressed,
		"channel", channel, "attempt", attempt, "retry_in", wait, "error", err.Error())...)
}

// GaveUp records that a notification was dropped after its last attempt
// failed with err. giveUpReason explains why it was not retried.
func (l *FailureLog) GaveUp(channel string, attempts int, giveUpReason string, err error) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()

	state, suppressed := l.record(channel, err)
	if state.errored {
		state.suppressed++
		return
	}
	state.errored = true
	l.logger.Error("notification failed, giving up", withRepeats(suppressed,
		"channel", channel, "attempts", attempts, "give_up_reason", giveUpReason, "error", err.Error())...)
}

// Succeeded records a successful attempt and logs the recovery when the
// channel had failed before.
func (l *FailureLog) Succeeded(channel string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()

	state, ok := l.channels[channel]
	if !ok {
		return
	}
	delete(l.channels, channel)
	l.logger.Info("notifications recovered",
		"channel", channel, "failed_attempts", state.failures, "last_error", state.text)
}

// withRepeats appends the number of unlogged repeats of the previous error
// to args when there were any.
func withRepeats(repeats int, args ...any) []any {
	if repeats > 0 {
		args = append(args, "previous_error_repeats", repeats)
	}
	return args
}

// record counts a failure of channel. When err's text differs from the
// previous failure's, it starts a new state and also returns how many
// repeats of the previous text went unlogged. The caller holds l.mu.
func (l *FailureLog) record(channel string, err error) (state *failureState, suppressed int) {
	state, ok := l.channels[channel]
	if !ok {
		state = &failureState{}
		l.channels[channel] = state
	}
	state.failures++

	text := err.Error()
	if ok && state.text == text {
		return state, 0
	}
	suppressed = state.suppressed
	state.text = text
	state.warned, state.errored, state.suppressed = false, false, 0
	return state, suppressed
}
