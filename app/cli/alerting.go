package cli

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifier/controlplane/app/alert"
	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/notify"
	"github.com/verifier/controlplane/app/notify/email"
	"github.com/verifier/controlplane/app/notify/slack"
	"github.com/verifier/controlplane/app/web"
)

// Channels are the configured notification channels, each wrapped in a
// retrier, plus the bare notifiers for the Settings page's test buttons.
type Channels struct {
	Senders []alert.Sender
	Slack   notify.Notifier // nil when SLACK_WEBHOOK_URL is unset
	Email   notify.Notifier // nil when SMTP_HOST is unset
}

// newChannels builds the Slack and email notifiers that the configuration
// enables.
func newChannels(cfg config.Config, reg prometheus.Registerer, log *slog.Logger) (Channels, error) {
	var ch Channels
	m := notify.NewMetrics(reg)
	failures := notify.NewFailureLog(log)
	if cfg.SlackWebhookURL != "" {
		ch.Slack = slack.New(cfg.SlackWebhookURL, nil)
		ch.Senders = append(ch.Senders, notify.NewRetrier(ch.Slack, m, failures))
	}
	if cfg.SMTP.Host != "" {
		n, err := email.New(email.Config{
			Host: cfg.SMTP.Host, Port: cfg.SMTP.Port, Username: cfg.SMTP.Username, Password: cfg.SMTP.Password,
			From: cfg.SMTP.From, To: cfg.SMTP.To, TLS: cfg.SMTP.TLS, DialTimeout: 10 * time.Second,
		})
		if err != nil {
			return ch, fmt.Errorf("email notifier: %w", err)
		}
		ch.Email = n
		ch.Senders = append(ch.Senders, notify.NewRetrier(n, m, failures))
	}
	return ch, nil
}

func slackDetail(cfg config.Config) string {
	if cfg.SlackWebhookURL == "" {
		return "set SLACK_WEBHOOK_URL"
	}
	return "webhook " + web.MaskURL(cfg.SlackWebhookURL)
}

func emailDetail(cfg config.Config) string {
	s := cfg.SMTP
	if s.Host == "" {
		return "set SMTP_HOST, SMTP_FROM and SMTP_TO"
	}
	auth := "no authentication"
	if s.Username != "" {
		auth = "user " + s.Username + ", password set"
	}
	return fmt.Sprintf("%s:%d, TLS %s, %s, from %s to %s", s.Host, s.Port, s.TLS, auth, s.From, strings.Join(s.To, ", "))
}
