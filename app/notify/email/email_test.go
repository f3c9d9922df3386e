package email_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	smtpserver "github.com/emersion/go-smtp"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
	"github.com/verifier/controlplane/app/notify/email"
)

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

// newNotifier returns a Notifier for the test server on port whose clock is
// 5 minutes after startsAt.
func newNotifier(t *testing.T, cfg email.Config) *email.Notifier {
	t.Helper()
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.From == "" {
		cfg.From = "control-plane@example.com"
	}
	if cfg.To == nil {
		cfg.To = []string{"oncall@example.com", "Team Lead <lead@example.com>"}
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	n, err := email.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	n.Now = func() time.Time { return startsAt.Add(5 * time.Minute) }
	return n
}

// parsedMessage is a received email split into its parts.
type parsedMessage struct {
	header mail.Header
	text   string
	html   string
}

// parseMessage parses data as MIME and returns the decoded text/plain and
// text/html parts, wherever they sit in the multipart tree.
func parseMessage(t *testing.T, data []byte) parsedMessage {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse message: %v\n%s", err, data)
	}
	parsed := parsedMessage{header: msg.Header}
	walkPart(t, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, &parsed)
	return parsed
}

func walkPart(t *testing.T, contentType, transferEncoding string, body io.Reader, parsed *parsedMessage) {
	t.Helper()
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatalf("parse Content-Type %q: %v", contentType, err)
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		reader := multipart.NewReader(body, params["boundary"])
		for {
			part, err := reader.NextPart()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("read part: %v", err)
			}
			walkPart(t, part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part, parsed)
		}
	}

	// multipart.Reader decodes quoted-printable itself; base64 is left.
	if strings.EqualFold(transferEncoding, "base64") {
		body = base64.NewDecoder(base64.StdEncoding, body)
	}
	content, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read %s part: %v", mediaType, err)
	}
	switch mediaType {
	case "text/plain":
		parsed.text = string(content)
	case "text/html":
		parsed.html = string(content)
	default:
		t.Errorf("unexpected part %s", mediaType)
	}
}

func decodeHeader(t *testing.T, value string) string {
	t.Helper()
	decoded, err := new(mime.WordDecoder).DecodeHeader(value)
	if err != nil {
		t.Fatalf("decode header %q: %v", value, err)
	}
	return decoded
}

// onlyMessage returns the one message b received.
func onlyMessage(t *testing.T, b *backend) received {
	t.Helper()
	messages := b.received()
	if len(messages) != 1 {
		t.Fatalf("server received %d messages, want 1", len(messages))
	}
	return messages[0]
}

func TestNotifySendsBothParts(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})
	notification := fleet.Notification{
		Firing: []fleet.Alert{
			alert("w-01", "w-01 missed heartbeats"),
			alert("w-02", "w-02 missed heartbeats"),
		},
		URL: "https://cp.example.com/verifier-engine-room/alerts",
	}

	retry, err := n.Notify(context.Background(), notification)

	if err != nil {
		t.Fatalf("Notify: retry=%v, %v", retry, err)
	}
	got := onlyMessage(t, b)
	if got.from != "control-plane@example.com" {
		t.Errorf("MAIL FROM = %q", got.from)
	}
	if want := []string{"oncall@example.com", "lead@example.com"}; !slices.Equal(got.rcpt, want) {
		t.Errorf("RCPT TO = %v, want %v", got.rcpt, want)
	}

	m := parseMessage(t, got.data)
	if subject := decodeHeader(t, m.header.Get("Subject")); subject != notification.Title() {
		t.Errorf("Subject = %q, want %q", subject, notification.Title())
	}
	if to := m.header.Get("To"); !strings.Contains(to, "oncall@example.com") || !strings.Contains(to, "lead@example.com") {
		t.Errorf("To = %q, want both recipients", to)
	}
	if got := m.header.Get("Auto-Submitted"); got != "auto-generated" {
		t.Errorf("Auto-Submitted = %q, want auto-generated", got)
	}
	if m.header.Get("Message-Id") == "" || m.header.Get("Date") == "" {
		t.Errorf("Message-ID or Date missing: %v", m.header)
	}

	for name, body := range map[string]string{"text": m.text, "html": m.html} {
		for _, want := range []string{
			"Firing (2)",
			"w-01 missed heartbeats",
			"worker w-02 in pool billing",
			"95 s (threshold 30 s)",
			"2026-03-04T10:00:00Z (for 5m)",
			"https://cp.example.com/verifier-engine-room/alerts",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", name, want, body)
			}
		}
	}
	if !strings.Contains(m.html, `<a href="https://cp.example.com/verifier-engine-room/alerts"`) {
		t.Errorf("html part has no link to the Alerts page:\n%s", m.html)
	}
}

func TestNotifyEncodesNonASCIISubject(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})
	notification := fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 in Zürich missed heartbeats")}}

	if _, err := n.Notify(context.Background(), notification); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	m := parseMessage(t, onlyMessage(t, b).data)
	raw := m.header.Get("Subject")
	if !strings.HasPrefix(raw, "=?") {
		t.Errorf("raw Subject %q is not an encoded word", raw)
	}
	if subject := decodeHeader(t, raw); subject != "[FIRING] w-01 in Zürich missed heartbeats" {
		t.Errorf("decoded Subject = %q", subject)
	}
	if !strings.Contains(m.text, "Zürich") {
		t.Errorf("text part lacks Zürich:\n%s", m.text)
	}
}

func TestNotifyEscapesHTML(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})
	a := alert("<script>alert(1)</script>", `<img src=x onerror="alert(2)"> missed heartbeats`)
	notification := fleet.Notification{Firing: []fleet.Alert{a, alert("w-02", "w-02 missed heartbeats")}}

	if _, err := n.Notify(context.Background(), notification); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	m := parseMessage(t, onlyMessage(t, b).data)
	for _, raw := range []string{"<script>", "<img"} {
		if strings.Contains(m.html, raw) {
			t.Errorf("html part contains unescaped %q:\n%s", raw, m.html)
		}
	}
	for _, escaped := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;"} {
		if !strings.Contains(m.html, escaped) {
			t.Errorf("html part lacks %q:\n%s", escaped, m.html)
		}
	}
	if !strings.Contains(m.text, "worker <script>alert(1)</script> in pool billing") {
		t.Errorf("text part does not show the worker id as sent:\n%s", m.text)
	}
}

func TestNotifyShortensLongLists(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})
	var notification fleet.Notification
	for i := range email.MaxAlerts + 50 {
		notification.Firing = append(notification.Firing, alert(fmt.Sprintf("w-%03d", i), fmt.Sprintf("w-%03d missed heartbeats", i)))
	}
	resolved := alert("r-01", "r-01 missed heartbeats")
	resolved.Status, resolved.EndsAt = fleet.AlertResolved, startsAt.Add(time.Minute)
	notification.Resolved = []fleet.Alert{resolved}

	if _, err := n.Notify(context.Background(), notification); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	m := parseMessage(t, onlyMessage(t, b).data)
	for name, body := range map[string]string{"text": m.text, "html": m.html} {
		if got := strings.Count(body, "Since:"); got != email.MaxAlerts {
			t.Errorf("%s part lists %d alerts, want %d", name, got, email.MaxAlerts)
		}
		for _, want := range []string{"Firing (150)", "and 50 more firing alerts", "Resolved (1)", "and 1 more resolved alert"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q", name, want)
			}
		}
	}
}

func TestNotifyRefusesAuthWithoutTLS(t *testing.T) {
	b := &backend{users: map[string]string{"alerts": "s3cret"}}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSOpportunistic, Username: "alerts", Password: "s3cret"})

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil {
		t.Fatal("Notify sent with credentials over plain text")
	}
	if retry {
		t.Error("retry = true, want false: retrying cannot add TLS")
	}
	var stepErr *email.StepError
	if !errors.As(err, &stepErr) || stepErr.Step != "auth" {
		t.Errorf("error = %v, want a StepError of step auth", err)
	}
	if !strings.Contains(err.Error(), "without TLS") {
		t.Errorf("error %q does not say why", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %q reveals the password", err)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonConfig {
		t.Errorf("reason = %q, want config", got)
	}
	if attempts := b.auths(); len(attempts) != 0 {
		t.Errorf("server saw AUTH %v, want none", attempts)
	}
	if got := len(b.received()); got != 0 {
		t.Errorf("server received %d messages, want 0", got)
	}
}

func TestNewRejectsAuthWithoutTLS(t *testing.T) {
	_, err := email.New(email.Config{
		Host: "127.0.0.1", Port: 25, From: "cp@example.com", To: []string{"oncall@example.com"},
		TLS: email.TLSNone, Username: "alerts", Password: "s3cret",
	})

	if err == nil || !strings.Contains(err.Error(), "SMTP_TLS") {
		t.Fatalf("New error = %v, want one naming SMTP_TLS", err)
	}
}

func TestNotifyAuthOverStartTLS(t *testing.T) {
	b := &backend{users: map[string]string{"alerts": "s3cret"}}
	cert, pool := selfSignedCert(t)
	port := startServer(t, b, startTLSServer, cert)
	n := newNotifier(t, email.Config{
		Port: port, TLS: email.TLSStartTLS, Username: "alerts", Password: "s3cret",
		TLSConfig: &tls.Config{RootCAs: pool},
	})

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err != nil {
		t.Fatalf("Notify: retry=%v, %v", retry, err)
	}
	attempts := b.auths()
	if len(attempts) != 1 || attempts[0].username != "alerts" || !attempts[0].overTLS {
		t.Errorf("AUTH attempts = %+v, want one for alerts over TLS", attempts)
	}
	onlyMessage(t, b)
}

func TestNotifyOpportunisticUsesStartTLS(t *testing.T) {
	b := &backend{users: map[string]string{"alerts": "s3cret"}}
	cert, pool := selfSignedCert(t)
	port := startServer(t, b, startTLSServer, cert)
	n := newNotifier(t, email.Config{
		Port: port, TLS: email.TLSOpportunistic, Username: "alerts", Password: "s3cret",
		TLSConfig: &tls.Config{RootCAs: pool},
	})

	if _, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}}); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if attempts := b.auths(); len(attempts) != 1 || !attempts[0].overTLS {
		t.Errorf("AUTH attempts = %+v, want one over TLS", attempts)
	}
}

func TestNotifyWrongPassword(t *testing.T) {
	b := &backend{users: map[string]string{"alerts": "s3cret"}}
	cert, pool := selfSignedCert(t)
	port := startServer(t, b, startTLSServer, cert)
	n := newNotifier(t, email.Config{
		Port: port, TLS: email.TLSStartTLS, Username: "alerts", Password: "wrong-password",
		TLSConfig: &tls.Config{RootCAs: pool},
	})

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || retry {
		t.Fatalf("Notify = retry %v, %v; want a permanent error", retry, err)
	}
	var stepErr *email.StepError
	if !errors.As(err, &stepErr) || stepErr.Step != "auth" {
		t.Errorf("error = %v, want a StepError of step auth", err)
	}
	if !strings.Contains(err.Error(), "check SMTP_USERNAME and SMTP_PASSWORD") {
		t.Errorf("error %q does not say what to check", err)
	}
	if strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("error %q reveals the password", err)
	}
}

func TestNotifyImplicitTLS(t *testing.T) {
	b := &backend{users: map[string]string{"alerts": "s3cret"}}
	cert, pool := selfSignedCert(t)
	port := startServer(t, b, implicitServer, cert)
	n := newNotifier(t, email.Config{
		Port: port, TLS: email.TLSImplicit, Username: "alerts", Password: "s3cret",
		TLSConfig: &tls.Config{RootCAs: pool},
	})

	if _, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}}); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	if attempts := b.auths(); len(attempts) != 1 || !attempts[0].overTLS {
		t.Errorf("AUTH attempts = %+v, want one over TLS", attempts)
	}
	onlyMessage(t, b)
}

func TestNotifyUntrustedCertificate(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, startTLSServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSStartTLS})

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || retry {
		t.Fatalf("Notify = retry %v, %v; want a permanent error", retry, err)
	}
	var stepErr *email.StepError
	if !errors.As(err, &stepErr) || stepErr.Step != "starttls" {
		t.Errorf("error = %v, want a StepError of step starttls", err)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonConfig {
		t.Errorf("reason = %q, want config", got)
	}
	if got := len(b.received()); got != 0 {
		t.Errorf("server received %d messages over an untrusted connection", got)
	}
}

func TestNotifyStartTLSNotOffered(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSStartTLS})

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || retry {
		t.Fatalf("Notify = retry %v, %v; want a permanent error", retry, err)
	}
	if !strings.Contains(err.Error(), "does not offer STARTTLS") {
		t.Errorf("error %q does not say STARTTLS is missing", err)
	}
	if got := len(b.received()); got != 0 {
		t.Errorf("server received %d messages in plain text", got)
	}
}

func TestNotifyConnectionRefused(t *testing.T) {
	port := freePort(t)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})

	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || !retry {
		t.Fatalf("Notify = retry %v, %v; want a retryable error", retry, err)
	}
	var stepErr *email.StepError
	if !errors.As(err, &stepErr) || stepErr.Step != "dial" {
		t.Errorf("error = %v, want a StepError of step dial", err)
	}
	if want := "smtp dial 127.0.0.1:" + portString(port); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say the connection was refused", err)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonNetwork {
		t.Errorf("reason = %q, want network", got)
	}
}

func TestNotifyImplicitTLSAgainstPlainServer(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	const timeout = 3 * time.Second
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSImplicit, DialTimeout: timeout})

	start := time.Now()
	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})
	elapsed := time.Since(start)

	if err == nil || retry {
		t.Fatalf("Notify = retry %v, %v; want a permanent error", retry, err)
	}
	if elapsed >= timeout {
		t.Errorf("Notify took %s, not within the dial timeout %s", elapsed, timeout)
	}
	for _, want := range []string{"smtp dial 127.0.0.1:" + portString(port), "did not answer with TLS", "SMTP_TLS=starttls"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestNotifyPlainAgainstImplicitTLSServer(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, implicitServer, cert)
	const timeout = 300 * time.Millisecond
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSStartTLS, DialTimeout: timeout})

	start := time.Now()
	retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})
	elapsed := time.Since(start)

	if err == nil || !retry {
		t.Fatalf("Notify = retry %v, %v; want a retryable timeout", retry, err)
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("Notify took %s with a dial timeout of %s", elapsed, timeout)
	}
	if got := notify.ReasonOf(err); got != notify.ReasonTimeout {
		t.Errorf("reason = %q, want timeout", got)
	}
	if !strings.Contains(err.Error(), "SMTP_TLS=tls") {
		t.Errorf("error %q does not suggest implicit TLS", err)
	}
}

func TestNotifyRejectedRecipient(t *testing.T) {
	tests := []struct {
		name      string
		reply     *smtpserver.SMTPError
		wantRetry bool
	}{
		{"permanent", &smtpserver.SMTPError{Code: 550, EnhancedCode: smtpserver.EnhancedCode{5, 1, 1}, Message: "no such user"}, false},
		{"temporary", &smtpserver.SMTPError{Code: 451, EnhancedCode: smtpserver.EnhancedCode{4, 3, 0}, Message: "try again later"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &backend{rejectRcpt: map[string]*smtpserver.SMTPError{"lead@example.com": tt.reply}}
			cert, _ := selfSignedCert(t)
			port := startServer(t, b, plainServer, cert)
			n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})

			retry, err := n.Notify(context.Background(), fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

			if err == nil || retry != tt.wantRetry {
				t.Fatalf("Notify = retry %v, %v; want retry %v", retry, err, tt.wantRetry)
			}
			var stepErr *email.StepError
			if !errors.As(err, &stepErr) || stepErr.Step != "send" {
				t.Errorf("error = %v, want a StepError of step send", err)
			}
			if !strings.Contains(err.Error(), "lead@example.com") {
				t.Errorf("error %q does not name the rejected recipient", err)
			}
			if strings.Contains(err.Error(), "message ID") {
				t.Errorf("error %q carries the Message-ID, which differs per attempt", err)
			}
			if got := notify.ReasonOf(err); got != notify.ReasonSMTP {
				t.Errorf("reason = %q, want smtp", got)
			}
		})
	}
}

func TestNotifyCancelledContext(t *testing.T) {
	port := freePort(t)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	retry, err := n.Notify(ctx, fleet.Notification{Firing: []fleet.Alert{alert("w-01", "w-01 missed heartbeats")}})

	if err == nil || !retry {
		t.Fatalf("Notify = retry %v, %v; want a retryable error", retry, err)
	}
}

func TestTestMessage(t *testing.T) {
	b := &backend{}
	cert, _ := selfSignedCert(t)
	port := startServer(t, b, plainServer, cert)
	n := newNotifier(t, email.Config{Port: port, TLS: email.TLSNone})

	if err := notify.Test(context.Background(), n); err != nil {
		t.Fatalf("Test: %v", err)
	}

	m := parseMessage(t, onlyMessage(t, b).data)
	if subject := decodeHeader(t, m.header.Get("Subject")); subject != notify.TestTitle {
		t.Errorf("Subject = %q, want %q", subject, notify.TestTitle)
	}
}
