// Package slack sends alert notifications to a Slack incoming webhook as
// Block Kit messages.
package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
)

// DefaultTimeout bounds one webhook request, connection and response
// included.
const DefaultTimeout = 10 * time.Second

// maxErrorBody bounds how much of an error response goes into the error.
const maxErrorBody = 512

// Notifier posts notifications to one incoming webhook.
type Notifier struct {
	webhookURL string
	client     *http.Client

	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
	// Now is the clock used for "for 5m"; tests replace it.
	Now func() time.Time
}

// New returns a Notifier that posts to webhookURL with httpClient, or with
// http.DefaultClient when httpClient is nil. The URL is a secret: errors and
// logs show only its scheme and host.
func New(webhookURL string, httpClient *http.Client) *Notifier {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Notifier{webhookURL: webhookURL, client: httpClient, Timeout: DefaultTimeout, Now: time.Now}
}

// Name returns "slack".
func (n *Notifier) Name() string { return "slack" }

// Notify posts one message for notification. It retries on network errors,
// timeouts, HTTP 5xx and 429; for a 429 the error wraps a
// *notify.RetryAfterError with the wait from the Retry-After header. Other
// 4xx responses, such as an invalid payload or a removed webhook, are not
// retried. An empty notification posts nothing.
func (n *Notifier) Notify(ctx context.Context, notification fleet.Notification) (retry bool, err error) {
	if notification.Empty() {
		return false, nil
	}
	body, err := json.Marshal(buildPayload(notification, n.Now()))
	if err != nil {
		return false, notify.WithReason(notify.ReasonTemplate, fmt.Errorf("encode Slack message: %w", err))
	}

	timeout := n.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	if err := validateURL(n.webhookURL); err != nil {
		return false, notify.WithReason(notify.ReasonConfig, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.webhookURL, bytes.NewReader(body))
	if err != nil {
		return false, notify.WithReason(notify.ReasonConfig,
			fmt.Errorf("build request to Slack webhook %s: %w", redact(n.webhookURL), unwrapURLError(err)))
	}
	req.Header.Set("Content-Type", "application/json")

	resp, err := n.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("post to Slack webhook %s: %w", redact(n.webhookURL), unwrapURLError(err))
	}
	defer resp.Body.Close()
	return checkResponse(resp, n.Now())
}

// checkResponse returns nil for a 2xx response, else the error to report
// and whether to retry.
func checkResponse(resp *http.Response, now time.Time) (retry bool, err error) {
	responseBody, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	// Drain the rest so that the connection can be reused.
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, nil
	}

	status := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if detail := notify.OneLine(strings.TrimSpace(string(responseBody))); detail != "" {
		status += " (" + detail + ")"
	}
	reason := notify.ReasonForStatus(resp.StatusCode)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		err = fmt.Errorf("slack webhook returned %s", status)
		if after, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			err = fmt.Errorf("slack webhook returned %s: %w", status, &notify.RetryAfterError{After: after})
		}
		return true, notify.WithReason(reason, err)
	case resp.StatusCode >= 500:
		return true, notify.WithReason(reason, fmt.Errorf("slack webhook returned %s", status))
	default:
		return false, notify.WithReason(reason, fmt.Errorf("slack webhook rejected the message with %s", status))
	}
}

// parseRetryAfter returns the wait that a Retry-After header value requests,
// as delay-seconds or an HTTP date (RFC 9110, section 10.2.3).
func parseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.Atoi(value); err == nil {
		return time.Duration(max(seconds, 0)) * time.Second, true
	}
	if date, err := http.ParseTime(value); err == nil {
		return max(date.Sub(now), 0), true
	}
	return 0, false
}

// validateURL checks that webhookURL is an absolute http or https URL.
func validateURL(webhookURL string) error {
	u, err := url.Parse(webhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("invalid Slack webhook URL %s: set SLACK_WEBHOOK_URL to an absolute https URL such as https://hooks.slack.com/services/...", redact(webhookURL))
	}
	return nil
}

// unwrapURLError returns the cause inside the *url.Error that http.Client
// returns, because its message repeats the full URL, secret token included.
func unwrapURLError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err
	}
	return err
}

// redact returns the scheme and host of a webhook URL; the path holds the
// webhook's secret token.
func redact(webhookURL string) string {
	u, err := url.Parse(webhookURL)
	if err != nil || u.Host == "" {
		return "(not an absolute URL)"
	}
	return u.Scheme + "://" + u.Host + "/..."
}
