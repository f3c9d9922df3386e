package email_test

import (
	"context"
	"strings"
	"testing"

	"github.com/verifier/controlplane/views/email"
)

func sample() email.Notification {
	return email.Notification{
		Title: "[FIRING] <b>w-01</b> missed heartbeats",
		Sections: []email.Section{{
			Heading: "Firing (3)",
			Alerts: []email.Alert{{
				Summary: "<b>w-01</b> missed heartbeats",
				Subject: "worker <b>w-01</b> in pool billing",
				Since:   "2026-03-04T10:00:00Z (for 5m)",
				Value:   "95 s (threshold 30 s)",
			}},
			More: "and 2 more firing alerts",
		}},
		URL: "https://cp.example.com/verifier-engine-room/alerts",
	}
}

func render(t *testing.T, n email.Notification) string {
	t.Helper()
	var html strings.Builder
	if err := email.NotificationEmail(n).Render(context.Background(), &html); err != nil {
		t.Fatalf("Render: %v", err)
	}
	return html.String()
}

func TestNotificationEmailEscapes(t *testing.T) {
	html := render(t, sample())

	if strings.Contains(html, "<b>") {
		t.Errorf("html contains unescaped <b>:\n%s", html)
	}
	if got := strings.Count(html, "&lt;b&gt;w-01&lt;/b&gt;"); got != 4 {
		t.Errorf("escaped worker id appears %d times, want 4 (title, heading, summary, subject)", got)
	}
}

func TestNotificationEmailContent(t *testing.T) {
	html := render(t, sample())

	for _, want := range []string{
		"Firing (3)",
		"95 s (threshold 30 s)",
		"2026-03-04T10:00:00Z (for 5m)",
		"and 2 more firing alerts",
		`<a href="https://cp.example.com/verifier-engine-room/alerts"`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("html lacks %q:\n%s", want, html)
		}
	}
}

func TestNotificationEmailUnsafeURL(t *testing.T) {
	n := sample()
	n.URL = "javascript:alert(1)"

	if html := render(t, n); strings.Contains(html, "javascript:") {
		t.Errorf("html links an unsafe URL:\n%s", html)
	}
}

func TestNotificationEmailWithoutURL(t *testing.T) {
	n := sample()
	n.URL = ""

	if html := render(t, n); strings.Contains(html, "<a ") {
		t.Errorf("html has a link though URL is empty:\n%s", html)
	}
}

func TestPlainText(t *testing.T) {
	n := sample()
	n.Sections[0].Alerts = append(n.Sections[0].Alerts, email.Alert{Summary: "pool billing under size", Subject: "pool billing", Since: "2026-03-04T10:00:00Z (for 5m)"})

	want := `[FIRING] <b>w-01</b> missed heartbeats

Firing (3)

- <b>w-01</b> missed heartbeats
  Where: worker <b>w-01</b> in pool billing
  Value: 95 s (threshold 30 s)
  Since: 2026-03-04T10:00:00Z (for 5m)

- pool billing under size
  Where: pool billing
  Since: 2026-03-04T10:00:00Z (for 5m)

and 2 more firing alerts

Alerts page: https://cp.example.com/verifier-engine-room/alerts
`
	if got := n.PlainText(); got != want {
		t.Errorf("PlainText =\n%s\nwant\n%s", got, want)
	}
}
