package alert_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/alert"
	"github.com/verifier/controlplane/app/alerttest"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
	"github.com/verifier/controlplane/app/notify/email"
	"github.com/verifier/controlplane/app/notify/slack"
)

// heldSleep replaces a Retrier's Sleep: it records each wait, moves the
// fake clock by it, and returns only when the test releases it.
type heldSleep struct {
	clock   *alerttest.Clock
	mu      sync.Mutex
	waits   []time.Duration
	asked   chan time.Duration
	release chan struct{}
}

func newHeldSleep(clock *alerttest.Clock) *heldSleep {
	return &heldSleep{clock: clock, asked: make(chan time.Duration, 10), release: make(chan struct{})}
}

func (s *heldSleep) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	s.asked <- d
	select {
	case <-s.release:
		s.clock.Advance(d)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// emailAlerts counts the alerts listed in an email's text part and the
// alerts its "and N more" lines stand for.
func emailAlerts(text string) (listed, more int) {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "  Where: ") {
			listed++
		}
		if rest, ok := strings.CutPrefix(line, "and "); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			more += n
		}
	}
	return listed, more
}

// TestSlackRateLimitDelaysOnlySlack has Slack return 429 with Retry-After: 30
// to the first post while fifty workers miss their heartbeats in one check.
func TestSlackRateLimitDelaysOnlySlack(t *testing.T) {
	h := newHarness(t)
	// The Retrier's clock starts at the wall clock. Each wait that Slack
	// requests moves it forward instead of sleeping.
	sendClock := alerttest.NewClock()
	hook := alerttest.StartSlack(t, sendClock.Now, func(i int) alerttest.SlackResponse {
		if i == 0 {
			return alerttest.SlackResponse{Status: http.StatusTooManyRequests, RetryAfter: "30"}
		}
		return alerttest.SlackResponse{Status: http.StatusOK}
	})
	mailbox := alerttest.StartSMTP(t, time.Now)

	sleep := newHeldSleep(sendClock)
	slackSender := notify.NewRetrier(slack.New(hook.URL, nil), nil, nil)
	slackSender.Now, slackSender.Sleep = sendClock.Now, sleep.Sleep
	port, _ := strconv.Atoi(mailbox.Port)
	mailer, err := email.New(email.Config{
		Host: mailbox.Host, Port: port, From: "control-plane@example.com", To: []string{"oncall@example.com"},
		TLS: "none", DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	emailSender := notify.NewRetrier(mailer, nil, nil)
	dispatch := alert.NewDispatcher([]alert.Sender{slackSender, emailSender}, h.Log)
	engine := alert.NewEngine(h.Store, h.Service, h.Settings, dispatch, alerttest.Options(), h.Clock.Now, h.Log)
	t.Cleanup(func() {
		close(sleep.release)
		dispatch.Close(context.Background())
	})

	const workers = 50
	for i := range workers {
		h.Heartbeat(fmt.Sprintf("w-%02d", i), "billing", fleet.StateRunning, nil)
	}
	h.Clock.Advance(grace + time.Second)
	if err := engine.Check(context.Background()); err != nil {
		t.Fatalf("alert check: %v", err)
	}

	// Slack is rate limited and waits, and the email goes out meanwhile.
	first := hook.WaitPosts(t, 1, 5*time.Second)[0]
	var wait time.Duration
	select {
	case wait = <-sleep.asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the Slack retrier did not wait after 429")
	}
	if wait < 30*time.Second {
		t.Errorf("after 429 with Retry-After: 30 the retrier waits %s", wait)
	}
	mail := mailbox.WaitMessages(t, 1, 5*time.Second)[0]
	if want := "[FIRING] 50 workers missed heartbeats in pool billing"; mail.Subject != want {
		t.Errorf("email subject %q, want %q", mail.Subject, want)
	}
	if listed, more := emailAlerts(mail.Text); listed+more != workers {
		t.Errorf("email lists %d alerts and %d more, want %d in all:\n%s", listed, more, workers, mail.Text)
	}
	if n := len(hook.Posts()); n != 1 {
		t.Errorf("Slack got %d posts before the Retry-After passed, want 1", n)
	}

	// A resolution while Slack waits: email sends it at once, Slack queues it.
	for i := range 10 {
		h.Heartbeat(fmt.Sprintf("w-%02d", i), "billing", fleet.StateRunning, nil)
	}
	h.Clock.Advance(time.Second)
	if err := engine.Check(context.Background()); err != nil {
		t.Fatalf("alert check: %v", err)
	}
	if mails := mailbox.WaitMessages(t, 2, 5*time.Second); !strings.HasPrefix(mails[1].Subject, "[RESOLVED] 10 workers") {
		t.Errorf("second email subject %q, want the ten resolutions", mails[1].Subject)
	}
	if n := len(hook.Posts()); n != 1 {
		t.Errorf("Slack got %d posts before the Retry-After passed, want 1", n)
	}

	sleep.release <- struct{}{}
	posts := hook.WaitPosts(t, 3, 5*time.Second)
	if gap := posts[1].At.Sub(first.At); gap < 30*time.Second {
		t.Errorf("Slack posted again %s after the 429, want at least 30 s", gap)
	}
	if posts[1].Status != http.StatusOK || posts[2].Status != http.StatusOK {
		t.Errorf("later posts answered %d and %d, want 200", posts[1].Status, posts[2].Status)
	}
	if !strings.Contains(posts[1].Text, "50 workers missed heartbeats") {
		t.Errorf("retried post text %q, want the fifty in one message", posts[1].Text)
	}
	if shown, more := posts[1].Alerts("missed heartbeats"); shown+more != workers || shown == 0 {
		t.Errorf("retried post shows %d alerts and %d more, want %d in all", shown, more, workers)
	}
	if shown, more := posts[2].Alerts("missed heartbeats"); shown+more != 10 {
		t.Errorf("resolution post shows %d alerts and %d more, want 10", shown, more)
	}
	if n := len(hook.Posts()); n != 3 {
		t.Errorf("Slack got %d posts, want 3: the 429, its retry, the resolution", n)
	}
}

// TestSlackBacklogNotLost holds Slack in a Retry-After wait while seventy
// checks in a row each find one more silent worker, as when a fleet fails
// one worker a second. Email sends each at once, and Slack must still
// deliver every alert once it may post again.
func TestSlackBacklogNotLost(t *testing.T) {
	h := newHarness(t)
	sendClock := alerttest.NewClock()
	hook := alerttest.StartSlack(t, sendClock.Now, func(i int) alerttest.SlackResponse {
		if i == 0 {
			return alerttest.SlackResponse{Status: http.StatusTooManyRequests, RetryAfter: "120"}
		}
		return alerttest.SlackResponse{Status: http.StatusOK}
	})
	sleep := newHeldSleep(sendClock)
	slackSender := notify.NewRetrier(slack.New(hook.URL, nil), nil, nil)
	slackSender.Now, slackSender.Sleep = sendClock.Now, sleep.Sleep
	dispatch := alert.NewDispatcher([]alert.Sender{slackSender, h.Sent}, h.Log)
	engine := alert.NewEngine(h.Store, h.Service, h.Settings, dispatch, alerttest.Options(), h.Clock.Now, h.Log)
	closed := false
	t.Cleanup(func() {
		if !closed {
			close(sleep.release)
			dispatch.Close(context.Background())
		}
	})

	// Worker i heartbeats last at i seconds, so it crosses the grace one
	// second after worker i-1.
	const workers = 70
	for i := range workers {
		h.Heartbeat(fmt.Sprintf("w-%02d", i), "billing", fleet.StateRunning, nil)
		h.Clock.Advance(time.Second)
	}
	h.Clock.Advance(grace - workers*time.Second)
	for range workers {
		h.Clock.Advance(time.Second)
		if err := engine.Check(context.Background()); err != nil {
			t.Fatalf("alert check: %v", err)
		}
	}
	select {
	case <-sleep.asked:
	case <-time.After(5 * time.Second):
		t.Fatal("the Slack retrier did not wait after 429")
	}

	// Closing waits until every queued notification was delivered.
	closed = true
	close(sleep.release)
	dispatch.Close(context.Background())
	if firing, _ := h.Sent.Rule(fleet.RuleHeartbeatMissing); firing != workers {
		t.Fatalf("the recording channel got %d firing alerts, want %d", firing, workers)
	}
	seen := map[string]bool{}
	more := 0
	for _, p := range hook.Posts()[1:] {
		for _, sec := range p.Sections {
			if id, _, ok := strings.Cut(strings.TrimPrefix(sec, "*"), " missed heartbeats"); ok {
				seen[id] = true
			}
		}
		_, m := p.Alerts("")
		more += m
	}
	if len(seen)+more != workers {
		t.Errorf("Slack got %d of %d alerts (%d named, %d as \"and N more\") in %d posts", len(seen)+more, workers, len(seen), more, len(hook.Posts()))
	}
}
