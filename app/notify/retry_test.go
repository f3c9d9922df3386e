package notify_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
)

var errNetwork = errors.New("dial tcp 127.0.0.1:25: connect: connection refused")

// newRetrier returns a Retrier over notifier with a fake clock, fresh
// metrics and a captured log.
func newRetrier(t *testing.T, notifier *fakeNotifier) (*notify.Retrier, *notify.Metrics, *logBuffer) {
	t.Helper()
	metrics := notify.NewMetrics(prometheus.NewRegistry())
	logs := &logBuffer{}
	r := notify.NewRetrier(notifier, metrics, notify.NewFailureLog(logs.logger()))
	r.Now = notifier.clock.Now
	r.Sleep = notifier.clock.Sleep
	return r, metrics, logs
}

func TestRetrierRetriesUntilSuccess(t *testing.T) {
	clock := newFakeClock()
	notifier := &fakeNotifier{name: "fake", clock: clock, results: []result{
		{retry: true, err: errNetwork},
		{retry: true, err: errNetwork},
		{},
	}}
	r, metrics, logs := newRetrier(t, notifier)

	if err := r.Send(context.Background(), firingNotification()); err != nil {
		t.Fatalf("Send: %v", err)
	}

	if len(notifier.calls) != 3 {
		t.Errorf("Notify called %d times, want 3", len(notifier.calls))
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(clock.waits, want) {
		t.Errorf("waits = %v, want %v", clock.waits, want)
	}
	if got := testutil.ToFloat64(metrics.Attempts.WithLabelValues("fake")); got != 3 {
		t.Errorf("attempts metric = %v, want 3", got)
	}
	if got := testutil.ToFloat64(metrics.Failures.WithLabelValues("fake", "network")); got != 2 {
		t.Errorf("network failures metric = %v, want 2", got)
	}
	if got := logs.countLevel("WARN"); got != 1 {
		t.Errorf("Warn lines = %d, want 1 for two identical failures:\n%s", got, strings.Join(logs.lines(), "\n"))
	}
	if got := logs.countLevel("INFO"); got != 1 {
		t.Errorf("Info lines = %d, want 1 recovery line", got)
	}
}

func TestRetrierStopsWhenNotRetryable(t *testing.T) {
	clock := newFakeClock()
	rejected := notify.WithReason(notify.ReasonHTTP4xx, errors.New("slack webhook rejected the message with HTTP 400"))
	notifier := &fakeNotifier{name: "fake", clock: clock, results: []result{{retry: false, err: rejected}}}
	r, metrics, logs := newRetrier(t, notifier)

	err := r.Send(context.Background(), firingNotification())

	if !errors.Is(err, rejected) {
		t.Fatalf("Send error = %v, want it to wrap the notifier's error", err)
	}
	if !strings.Contains(err.Error(), "notify fake") {
		t.Errorf("error %q does not name the channel", err)
	}
	if len(notifier.calls) != 1 {
		t.Errorf("Notify called %d times, want 1", len(notifier.calls))
	}
	if len(clock.waits) != 0 {
		t.Errorf("slept %v, want no wait", clock.waits)
	}
	if got := testutil.ToFloat64(metrics.Failures.WithLabelValues("fake", "http_4xx")); got != 1 {
		t.Errorf("http_4xx failures metric = %v, want 1", got)
	}
	if got := logs.countLevel("ERROR"); got != 1 {
		t.Errorf("Error lines = %d, want 1", got)
	}
}

func TestRetrierGivesUpAfterMaxAttempts(t *testing.T) {
	clock := newFakeClock()
	var results []result
	for range 10 {
		results = append(results, result{retry: true, err: errNetwork})
	}
	notifier := &fakeNotifier{name: "fake", clock: clock, results: results}
	r, _, logs := newRetrier(t, notifier)
	r.MaxAttempts = 5
	r.MaxBackoff = 3 * time.Second

	err := r.Send(context.Background(), firingNotification())

	if !errors.Is(err, errNetwork) {
		t.Fatalf("Send error = %v, want it to wrap the last error", err)
	}
	if !strings.Contains(err.Error(), "out of attempts") {
		t.Errorf("error %q does not say why it gave up", err)
	}
	if len(notifier.calls) != 5 {
		t.Errorf("Notify called %d times, want 5", len(notifier.calls))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
	if !slices.Equal(clock.waits, want) {
		t.Errorf("waits = %v, want %v (doubling, capped at MaxBackoff)", clock.waits, want)
	}
	if got := logs.countLevel("WARN"); got != 1 {
		t.Errorf("Warn lines = %d, want 1", got)
	}
	if got := logs.countLevel("ERROR"); got != 1 {
		t.Errorf("Error lines = %d, want 1", got)
	}
}

func TestRetrierHonoursRetryAfter(t *testing.T) {
	clock := newFakeClock()
	limited := fmt.Errorf("slack webhook returned HTTP 429: %w", &notify.RetryAfterError{After: 30 * time.Second})
	short := fmt.Errorf("slack webhook returned HTTP 429: %w", &notify.RetryAfterError{After: 10 * time.Millisecond})
	notifier := &fakeNotifier{name: "fake", clock: clock, results: []result{
		{retry: true, err: limited},
		{retry: true, err: short},
		{},
	}}
	r, metrics, _ := newRetrier(t, notifier)

	if err := r.Send(context.Background(), firingNotification()); err != nil {
		t.Fatalf("Send: %v", err)
	}

	// The first wait is raised to Retry-After; the second keeps the
	// larger backoff.
	if want := []time.Duration{30 * time.Second, 2 * time.Second}; !slices.Equal(clock.waits, want) {
		t.Errorf("waits = %v, want %v", clock.waits, want)
	}
	if gap := notifier.calls[1].Sub(notifier.calls[0]); gap < 30*time.Second {
		t.Errorf("second attempt came %s after the first, before Retry-After", gap)
	}
	if got := testutil.ToFloat64(metrics.Failures.WithLabelValues("fake", "rate_limited")); got != 2 {
		t.Errorf("rate_limited failures metric = %v, want 2", got)
	}
}

func TestRetrierRejectsLongRetryAfter(t *testing.T) {
	clock := newFakeClock()
	limited := &notify.RetryAfterError{After: time.Hour}
	notifier := &fakeNotifier{name: "fake", clock: clock, results: []result{{retry: true, err: limited}}}
	r, _, _ := newRetrier(t, notifier)

	err := r.Send(context.Background(), firingNotification())

	if err == nil || !strings.Contains(err.Error(), "Retry-After 1h0m0s is over the maximum") {
		t.Fatalf("Send error = %v, want a Retry-After over the maximum", err)
	}
	if len(clock.waits) != 0 {
		t.Errorf("slept %v, want no wait", clock.waits)
	}
}

func TestRetrierStopsBeforeDeadline(t *testing.T) {
	clock := newFakeClock()
	var results []result
	for range 10 {
		results = append(results, result{retry: true, err: errNetwork})
	}
	notifier := &fakeNotifier{name: "fake", clock: clock, results: results}
	r, _, _ := newRetrier(t, notifier)
	ctx, cancel := context.WithDeadline(context.Background(), clock.Now().Add(5*time.Second))
	defer cancel()

	err := r.Send(ctx, firingNotification())

	// Waits of 1 s and 2 s fit in 5 s; the next wait of 4 s would not.
	if err == nil || !strings.Contains(err.Error(), "would pass the deadline") {
		t.Fatalf("Send error = %v, want it to stop before the deadline", err)
	}
	if len(notifier.calls) != 3 {
		t.Errorf("Notify called %d times, want 3", len(notifier.calls))
	}
}

func TestRetrierStopsWhenContextEnds(t *testing.T) {
	clock := newFakeClock()
	clock.sleepErr = context.Canceled
	notifier := &fakeNotifier{name: "fake", clock: clock, results: []result{{retry: true, err: errNetwork}}}
	r, _, _ := newRetrier(t, notifier)

	err := r.Send(context.Background(), firingNotification())

	if !errors.Is(err, errNetwork) {
		t.Fatalf("Send error = %v, want it to wrap the notifier's error", err)
	}
	if !strings.Contains(err.Error(), "stopped waiting to retry") {
		t.Errorf("error %q does not say that the wait was cut short", err)
	}
}

func TestRetrierSkipsEmptyNotification(t *testing.T) {
	notifier := &fakeNotifier{name: "fake", clock: newFakeClock()}
	r, _, _ := newRetrier(t, notifier)

	if err := r.Send(context.Background(), fleet.Notification{}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(notifier.calls) != 0 {
		t.Errorf("Notify called %d times for an empty notification", len(notifier.calls))
	}
}

func TestRetrierWithoutMetricsOrLog(t *testing.T) {
	clock := newFakeClock()
	notifier := &fakeNotifier{name: "fake", clock: clock, results: []result{{retry: true, err: errNetwork}, {}}}
	r := notify.NewRetrier(notifier, nil, nil)
	r.Now, r.Sleep = clock.Now, clock.Sleep

	if err := r.Send(context.Background(), firingNotification()); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

func TestDefaultSleepEndsWithContext(t *testing.T) {
	notifier := &fakeNotifier{name: "fake", clock: newFakeClock(), results: []result{{retry: true, err: errNetwork}}}
	r := notify.NewRetrier(notifier, nil, nil)
	r.InitialBackoff = time.Hour
	r.MaxRetryAfter = 2 * time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)

	start := time.Now()
	err := r.Send(ctx, firingNotification())

	if !errors.Is(err, errNetwork) || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("Send error = %v, want the cancellation and the last error", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Send took %s after cancellation", elapsed)
	}
}
