package notify_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// result is one scripted return of fakeNotifier.Notify.
type result struct {
	retry bool
	err   error
}

// fakeNotifier returns scripted results from Notify and records each call.
type fakeNotifier struct {
	name    string
	results []result
	clock   *fakeClock

	mu    sync.Mutex
	calls []time.Time // fake time of each call
}

func (f *fakeNotifier) Name() string { return f.name }

func (f *fakeNotifier) Notify(ctx context.Context, n fleet.Notification) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, f.clock.Now())
	i := len(f.calls) - 1
	if i >= len(f.results) {
		return false, nil
	}
	return f.results[i].retry, f.results[i].err
}

// fakeClock is a clock whose Sleep records the wait and moves time on at
// once.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
	// sleepErr, when set, is returned by Sleep instead of waiting.
	sleepErr error
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sleepErr != nil {
		return c.sleepErr
	}
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	return nil
}

// logBuffer is a slog.Logger that writes text lines to a buffer.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	text := strings.TrimSpace(b.buf.String())
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

// countLevel returns how many lines were logged at level, such as "WARN".
func (b *logBuffer) countLevel(level string) int {
	n := 0
	for _, line := range b.lines() {
		if strings.Contains(line, "level="+level+" ") {
			n++
		}
	}
	return n
}

func firingNotification() fleet.Notification {
	return fleet.Notification{Firing: []fleet.Alert{{
		Fingerprint: "heartbeat_missing/worker/w-01",
		Rule:        fleet.RuleHeartbeatMissing,
		Status:      fleet.AlertFiring,
		Pool:        "billing",
		WorkerID:    "w-01",
		Summary:     "w-01 missed heartbeats",
	}}}
}
