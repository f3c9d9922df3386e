package notify_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"this is too long", 10, "this is t…"},
		{"Zürich Zürich", 8, "Zürich …"},
		{"anything", 0, ""},
	}
	for _, tt := range tests {
		if got := notify.Truncate(tt.in, tt.limit); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got := notify.OneLine("a\r\nb\tc\x1b[31md"); got != "a  b c [31md" {
		t.Errorf("OneLine = %q", got)
	}
}

func TestMore(t *testing.T) {
	if got := notify.More(1, fleet.AlertResolved); got != "and 1 more resolved alert" {
		t.Errorf("More(1) = %q", got)
	}
	if got := notify.More(12, fleet.AlertFiring); got != "and 12 more firing alerts" {
		t.Errorf("More(12) = %q", got)
	}
}

func TestSplit(t *testing.T) {
	alerts := make([]fleet.Alert, 5)
	tests := []struct{ limit, shown, more int }{
		{10, 5, 0}, {5, 5, 0}, {3, 3, 2}, {0, 0, 5}, {-1, 0, 5},
	}
	for _, tt := range tests {
		shown, more := notify.Split(alerts, tt.limit)
		if len(shown) != tt.shown || more != tt.more {
			t.Errorf("Split(5 alerts, %d) = %d shown, %d more; want %d, %d", tt.limit, len(shown), more, tt.shown, tt.more)
		}
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		alert fleet.Alert
		want  string
	}{
		{fleet.Alert{Value: 95, Threshold: 30, Unit: "s"}, "95 s (threshold 30 s)"},
		{fleet.Alert{Value: 12.3456, Threshold: 10, Unit: "%"}, "12.35% (threshold 10%)"},
		{fleet.Alert{Value: 1, Threshold: 3}, "1 (threshold 3)"},
		{fleet.Alert{}, ""},
	}
	for _, tt := range tests {
		if got := notify.FormatValue(tt.alert); got != tt.want {
			t.Errorf("FormatValue(%+v) = %q, want %q", tt.alert, got, tt.want)
		}
	}
}

func TestFormatSince(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	start := time.Date(2026, 1, 2, 16, 4, 5, 0, berlin)
	now := start.Add(5*time.Minute + 30*time.Second)

	firing := fleet.Alert{Status: fleet.AlertFiring, StartsAt: start}
	if got, want := notify.FormatSince(firing, now), "2026-01-02T15:04:05Z (for 5m)"; got != want {
		t.Errorf("firing: FormatSince = %q, want %q", got, want)
	}

	resolved := fleet.Alert{Status: fleet.AlertResolved, StartsAt: start, EndsAt: start.Add(90 * time.Minute)}
	if got, want := notify.FormatSince(resolved, now), "2026-01-02T15:04:05Z to 2026-01-02T16:34:05Z (lasted 1h30m)"; got != want {
		t.Errorf("resolved: FormatSince = %q, want %q", got, want)
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{45 * time.Second, "45s"},
		{5*time.Minute + 59*time.Second, "5m"},
		{time.Hour, "1h"},
		{time.Hour + 30*time.Minute, "1h30m"},
		{50 * time.Hour, "2d2h"},
		{48 * time.Hour, "2d"},
	}
	for _, tt := range tests {
		if got := notify.FormatDuration(tt.in); got != tt.want {
			t.Errorf("FormatDuration(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReasonOf(t *testing.T) {
	timeout := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutError{}}
	tests := []struct {
		name string
		err  error
		want notify.Reason
	}{
		{"tagged", notify.WithReason(notify.ReasonSMTP, errors.New("550")), notify.ReasonSMTP},
		{"tagged and wrapped", fmt.Errorf("send: %w", notify.WithReason(notify.ReasonTemplate, errors.New("x"))), notify.ReasonTemplate},
		{"retry after", fmt.Errorf("429: %w", &notify.RetryAfterError{After: time.Second}), notify.ReasonRateLimited},
		{"deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), notify.ReasonTimeout},
		{"net timeout", timeout, notify.ReasonTimeout},
		{"other", errors.New("connection reset by peer"), notify.ReasonNetwork},
	}
	for _, tt := range tests {
		if got := notify.ReasonOf(tt.err); got != tt.want {
			t.Errorf("%s: ReasonOf = %q, want %q", tt.name, got, tt.want)
		}
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestReasonForStatus(t *testing.T) {
	tests := map[int]notify.Reason{
		429: notify.ReasonRateLimited,
		400: notify.ReasonHTTP4xx,
		404: notify.ReasonHTTP4xx,
		500: notify.ReasonHTTP5xx,
		503: notify.ReasonHTTP5xx,
		302: notify.ReasonConfig,
	}
	for code, want := range tests {
		if got := notify.ReasonForStatus(code); got != want {
			t.Errorf("ReasonForStatus(%d) = %q, want %q", code, got, want)
		}
	}
}

func TestWithReasonNil(t *testing.T) {
	if err := notify.WithReason(notify.ReasonSMTP, nil); err != nil {
		t.Errorf("WithReason(nil) = %v, want nil", err)
	}
}

func TestTitleOfTestNotification(t *testing.T) {
	n := notify.TestNotification(time.Now())

	if !notify.IsTest(n) {
		t.Fatal("IsTest(TestNotification) = false")
	}
	if got := notify.Title(n); got != notify.TestTitle {
		t.Errorf("Title = %q, want %q", got, notify.TestTitle)
	}
	if notify.IsTest(firingNotification()) {
		t.Error("IsTest of a real notification = true")
	}
}

func TestTitleIsOneLine(t *testing.T) {
	n := firingNotification()
	n.Firing[0].Summary = "w-01 missed\r\nBcc: attacker@example.com"

	if got := notify.Title(n); strings.ContainsAny(got, "\r\n") {
		t.Errorf("Title = %q, want a single line", got)
	}
}

func TestTestSendsOnce(t *testing.T) {
	clock := newFakeClock()
	notifier := &fakeNotifier{name: "fake", clock: clock, results: []result{{retry: true, err: errNetwork}}}

	err := notify.Test(context.Background(), notifier)

	if !errors.Is(err, errNetwork) {
		t.Fatalf("Test error = %v, want the notifier's error", err)
	}
	if !strings.Contains(err.Error(), "send test notification to fake") {
		t.Errorf("error %q does not name the channel", err)
	}
	if len(notifier.calls) != 1 {
		t.Errorf("Notify called %d times, want 1 (no retries)", len(notifier.calls))
	}
}
