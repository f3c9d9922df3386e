package slack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
	"github.com/verifier/controlplane/app/notify/slack"
)

// message is the posted JSON, decoded.
type message struct {
	Text   string `json:"text"`
	Blocks []struct {
		Type string `json:"type"`
		Text struct {
			Type     string `json:"type"`
			Text     string `json:"text"`
			Verbatim bool   `json:"verbatim"`
		} `json:"text"`
	} `json:"blocks"`
}

// sections returns the texts of the section blocks.
func (m message) sections() []string {
	var texts []string
	for _, b := range m.Blocks {
		if b.Type == "section" {
			texts = append(texts, b.Text.Text)
		}
	}
	return texts
}

// webhook is a fake Slack incoming webhook. Each request gets the next
// scripted response, and once they run out it responds 200 ok.
type webhook struct {
	t         *testing.T
	responses []func(w http.ResponseWriter)
	now       func() time.Time // fake clock read at each request

	mu       sync.Mutex
	messages []message
	times    []time.Time
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()

	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		h.t.Errorf("Content-Type = %q, want application/json", ct)
	}
	body, _ := io.ReadAll(r.Body)
	var m message
	if err := json.Unmarshal(body, &m); err != nil {
		h.t.Errorf("posted body is not JSON: %v\n%s", err, body)
	}
	i := len(h.messages)
	h.messages = append(h.messages, m)
	if h.now != nil {
		h.times = append(h.times, h.now())
	}

	if i < len(h.responses) {
		h.responses[i](w)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

func (h *webhook) posted() []message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]message(nil), h.messages...)
}

func status(code int, body string, headers ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

// startWebhook serves h and returns a Notifier for it whose clock is fixed at
// now.
func startWebhook(t *testing.T, h *webhook, now time.Time) *slack.Notifier {
	t.Helper()
	h.t = t
	server := httptest.NewServer(h)
	t.Cleanup(server.Close)
	n := slack.New(server.URL+"/services/T000/B000/secret-token", server.Client())
	n.Now = func() time.Time { return now }
	return n
}

var startsAt = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

func alert(worker, summary string) fleet.Alert {
	return fleet.Alert{
		Fingerprint: fleet.Fingerprint(fleet.RuleHeartbeatMissing, "billing", worker),
		Rule:        fleet.RuleHeartbeatMissing,
		Status:      fleet.AlertFiring,
		Pool:        "billing",
		WorkerID:    worker,
		Summary:     summary,
		Value:       95,
		Threshold:   30,
		Unit:        "s",
		StartsAt:    startsAt,
	}
}

func resolvedAlert(worker string) fleet.Alert {
	a := alert(worker, worker+" missed heartbeats")
	a.Status = fleet.AlertResolved
	a.EndsAt = startsAt.Add(3 * time.Minute)
	return a
}

func TestNotifyPostsBlocks(t *testing.T) {
	h := &webhook{}
	n := startWebhook(t, h, startsAt.Add(5*time.Minute))
	notification := fleet.Notification{
		Firing:   []fleet.Alert{alert("w-01", "w-01 missed heartbeats")},
		Resolved: []fleet.Alert{resolvedAlert("w-02")},
		URL:      "https://cp.example.com/verifier-engine-room/alerts",
	}

	retry, err := n.Notify(context.Background(), notification)

	if err != nil {
		t.Fatalf("Notify: retry=%v, %v", retry, err)
	}
	posted := h.posted()
	if len(posted) != 1 {
		t.Fatalf("posted %d messages, want 1", len(posted))
	}
	m := posted[0]
	if m.Text != notification.Title() {
		t.Errorf("fallback text = %q, want %q", m.Text, notification.Title())
	}
	if m.Blocks[0].Type != "header" || m.Blocks[0].Text.Type != "plain_text" || m.Blocks[0].Text.Text != notification.Title() {
		t.Errorf("first block = %+v, want a plain_text header with the title", m.Blocks[0])
	}

	sections := m.sections()
	want := []string{
		":red_circle: *Firing* (1)",
		"*w-01 missed heartbeats*\nWhere: worker w-01 in pool billing\nValue: 95 s (threshold 30 s)\nSince: 2026-03-04T10:00:00Z (for 5m)",
		":white_check_mark: *Resolved* (1)",
		"*w-02 missed heartbeats*\nWhere: worker w-02 in pool billing\nValue: 95 s (threshold 30 s)\nSince: 2026-03-04T10:00:00Z to 2026-03-04T10:03:00Z (lasted 3m)",
		"<https://cp.example.com/verifier-engine-room/alerts|Open the Alerts page>",
	}
	if len(sections) != len(want) {
		t.Fatalf("got %d sections, want %d:\n%s", len(sections), len(want), strings.Join(sections, "\n---\n"))
	}
	for i := range want {
		if sections[i] != want[i] {
			t.Errorf("section %d = %q, want %q", i, sections[i], want[i])
		}
	}
	for _, b := range m.Blocks[1:] {
		if b.Text.Type != "mrkdwn" || !b.Text.Verbatim {
			t.Errorf("section %q is %s with verbatim=%v, want verbatim mrkdwn", b.Text.Text, b.Text.Type, b.Text.Verbatim)
		}
	}
}

func TestNotifyWithoutURLHasNoLink(t *testing.T) {
	h := &webhook{}
	n := startWebhook(t, h, startsAt)

	if _, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}}); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	for _, s := range h.posted()[0].sections() {
		if strings.Contains(s, "Alerts page") {
			t.Errorf("section %q links the Alerts page though URL is empty", s)
		}
	}
}

func TestNotifyEscapesWorkerText(t *testing.T) {
	h := &webhook{}
	n := startWebhook(t, h, startsAt)
	a := alert("<script>alert(1)</script>", "<!channel> deploy & rollback, @here and @Everyone look <@U123>")
	a.Pool = "<!here>"
	notification := fleet.Notification{Firing: []fleet.Alert{a, alert("w-02", "w-02 missed heartbeats")}}

	if _, err := n.Notify(context.Background(), notification); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	m := h.posted()[0]
	mrkdwn := append([]string{m.Text}, m.sections()...)
	all := strings.Join(mrkdwn, "\n")
	for _, raw := range []string{"<script>", "<!channel>", "<!here>", "<@U123>", "@here", "@Everyone", " & "} {
		if strings.Contains(all, raw) {
			t.Errorf("mrkdwn text contains unescaped %q:\n%s", raw, all)
		}
	}
	for _, escaped := range []string{"&lt;script&gt;", "&lt;!channel&gt;", "&lt;!here&gt;", "&lt;@U123&gt;", "@\u2060here", "@\u2060Everyone", " &amp; "} {
		if !strings.Contains(all, escaped) {
			t.Errorf("mrkdwn text lacks %q:\n%s", escaped, all)
		}
	}
}

func TestNotifyShortensLongLists(t *testing.T) {
	h := &webhook{}
	n := startWebhook(t, h, startsAt)
	var notification fleet.Notification
	for i := range 120 {
		notification.Firing = append(notification.Firing, alert(fmt.Sprintf("w-%03d", i), fmt.Sprintf("w-%03d missed heartbeats", i)))
	}
	for i := range 30 {
		notification.Resolved = append(notification.Resolved, resolvedAlert(fmt.Sprintf("r-%03d", i)))
	}
	notification.URL = "https://cp.example.com/verifier-engine-room/alerts"

	if _, err := n.Notify(context.Background(), notification); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	m := h.posted()[0]
	if len(m.Blocks) > slack.MaxBlocks {
		t.Errorf("posted %d blocks, over Slack's limit of %d", len(m.Blocks), slack.MaxBlocks)
	}
	firingShown, resolvedShown := 0, 0
	var more []string
	for _, s := range m.sections() {
		switch {
		case strings.HasPrefix(s, "*w-"):
			firingShown++
		case strings.HasPrefix(s, "*r-"):
			resolvedShown++
		case strings.HasPrefix(s, "_and "):
			more = append(more, s)
		}
	}
	wantMore := []string{
		fmt.Sprintf("_and %d more firing alerts_", 120-firingShown),
		fmt.Sprintf("_and %d more resolved alerts_", 30-resolvedShown),
	}
	if strings.Join(more, "|") != strings.Join(wantMore, "|") {
		t.Errorf("more lines = %q, want %q", more, wantMore)
	}
	if firingShown < 40 {
		t.Errorf("listed %d firing alerts, want the block budget used for them first", firingShown)
	}
	last := m.sections()[len(m.sections())-1]
	if !strings.Contains(last, "Open the Alerts page") {
		t.Errorf("last section = %q, want the Alerts page link kept", last)
	}
}

func TestNotifyRespectsTextLimits(t *testing.T) {
	h := &webhook{}
	n := startWebhook(t, h, startsAt)
	huge := strings.Repeat("<&>", 2000)
	notification := fleet.Notification{Firing: []fleet.Alert{alert(huge, huge)}}

	if _, err := n.Notify(context.Background(), notification); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	m := h.posted()[0]
	if got := utf8.RuneCountInString(m.Blocks[0].Text.Text); got > slack.MaxHeaderText {
		t.Errorf("header has %d characters, over %d", got, slack.MaxHeaderText)
	}
	for _, s := range m.sections() {
		if got := utf8.RuneCountInString(s); got > slack.MaxSectionText {
			t.Errorf("section has %d characters, over %d", got, slack.MaxSectionText)
		}
	}
	if !strings.HasSuffix(m.Blocks[0].Text.Text, notify.Ellipsis) {
		t.Errorf("shortened header %q does not end with %q", m.Blocks[0].Text.Text, notify.Ellipsis)
	}
}

func TestNotifyRateLimited(t *testing.T) {
	h := &webhook{responses: []func(http.ResponseWriter){status(http.StatusTooManyRequests, "rate_limited", "Retry-After", "7")}}
	n := startWebhook(t, h, startsAt)

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if !retry {
		t.Error("retry = false for HTTP 429")
	}
	var retryAfter *notify.RetryAfterError
	if !errors.As(err, &retryAfter) || retryAfter.After != 7*time.Second {
		t.Fatalf("error = %v, want a RetryAfterError of 7s", err)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonRateLimited {
		t.Errorf("reason = %q, want rate_limited", got)
	}
}

// fakeClock moves time on when the retrier sleeps, so tests never wait.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	return nil
}

func newRetrier(n *slack.Notifier, clock *fakeClock) (*notify.Retrier, *notify.Metrics) {
	metrics := notify.NewMetrics(prometheus.NewRegistry())
	r := notify.NewRetrier(n, metrics, nil)
	r.Now, r.Sleep = clock.Now, clock.Sleep
	n.Now = clock.Now
	return r, metrics
}

func TestRetrierWaitsForRetryAfter(t *testing.T) {
	clock := &fakeClock{now: startsAt}
	h := &webhook{
		responses: []func(http.ResponseWriter){status(http.StatusTooManyRequests, "rate_limited", "Retry-After", "7")},
		now:       clock.Now,
	}
	n := startWebhook(t, h, startsAt)
	r, _ := newRetrier(n, clock)

	if err := r.Send(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}}); err != nil {
		t.Fatalf("Send: %v", err)
	}

	if len(h.times) != 2 {
		t.Fatalf("posted %d times, want 2", len(h.times))
	}
	if gap := h.times[1].Sub(h.times[0]); gap < 7*time.Second {
		t.Errorf("second post came %s after the first, before Retry-After of 7s", gap)
	}
	if len(clock.waits) != 1 || clock.waits[0] != 7*time.Second {
		t.Errorf("waits = %v, want [7s]", clock.waits)
	}
}

func TestRetrierRetriesServerErrors(t *testing.T) {
	clock := &fakeClock{now: startsAt}
	h := &webhook{responses: []func(http.ResponseWriter){
		status(http.StatusServiceUnavailable, "unavailable"),
		status(http.StatusInternalServerError, ""),
	}}
	n := startWebhook(t, h, startsAt)
	r, metrics := newRetrier(n, clock)

	if err := r.Send(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}}); err != nil {
		t.Fatalf("Send: %v", err)
	}

	if got := len(h.posted()); got != 3 {
		t.Errorf("posted %d times, want 3", got)
	}
	if got := testutil.ToFloat64(metrics.Failures.WithLabelValues("slack", "http_5xx")); got != 2 {
		t.Errorf("http_5xx failures = %v, want 2", got)
	}
	if got := testutil.ToFloat64(metrics.Attempts.WithLabelValues("slack")); got != 3 {
		t.Errorf("attempts = %v, want 3", got)
	}
}

func TestRetrierDoesNotRetryClientErrors(t *testing.T) {
	clock := &fakeClock{now: startsAt}
	h := &webhook{responses: []func(http.ResponseWriter){status(http.StatusBadRequest, "invalid_payload")}}
	n := startWebhook(t, h, startsAt)
	r, metrics := newRetrier(n, clock)

	err := r.Send(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || !strings.Contains(err.Error(), "HTTP 400 (invalid_payload)") {
		t.Fatalf("Send error = %v, want the status and Slack's reason", err)
	}
	if got := len(h.posted()); got != 1 {
		t.Errorf("posted %d times, want 1", got)
	}
	if got := testutil.ToFloat64(metrics.Failures.WithLabelValues("slack", "http_4xx")); got != 1 {
		t.Errorf("http_4xx failures = %v, want 1", got)
	}
}

func TestNotifyNetworkErrorHidesToken(t *testing.T) {
	server := httptest.NewServer(http.NotFoundHandler())
	url := server.URL + "/services/T000/B000/secret-token"
	server.Close()
	n := slack.New(url, nil)

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || !retry {
		t.Fatalf("Notify = retry %v, %v; want a retryable error", retry, err)
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Errorf("error %q reveals the webhook token", err)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonNetwork {
		t.Errorf("reason = %q, want network", got)
	}
}

func TestNotifyTimeout(t *testing.T) {
	release := make(chan struct{})
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer server.Close()
	defer close(release)
	n := slack.New(server.URL+"/services/x", server.Client())
	n.Timeout = 50 * time.Millisecond

	start := time.Now()
	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || !retry {
		t.Fatalf("Notify = retry %v, %v; want a retryable error", retry, err)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonTimeout {
		t.Errorf("reason = %q, want timeout (error %v)", got, err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Notify took %s with a 50ms timeout", elapsed)
	}
}

func TestNotifyInvalidURL(t *testing.T) {
	n := slack.New("hooks.slack.com/services/x", nil)

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || retry {
		t.Fatalf("Notify = retry %v, %v; want a permanent error", retry, err)
	}
	if !strings.Contains(err.Error(), "SLACK_WEBHOOK_URL") {
		t.Errorf("error %q does not name the setting to fix", err)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonConfig {
		t.Errorf("reason = %q, want config", got)
	}
}

func TestTestMessage(t *testing.T) {
	h := &webhook{}
	n := startWebhook(t, h, startsAt)

	if err := notify.Test(context.Background(), n); err != nil {
		t.Fatalf("Test: %v", err)
	}

	m := h.posted()[0]
	if got := m.Blocks[0].Text.Text; got != notify.TestTitle {
		t.Errorf("header = %q, want %q", got, notify.TestTitle)
	}
	if m.Text != notify.TestTitle {
		t.Errorf("fallback text = %q, want %q", m.Text, notify.TestTitle)
	}
}
