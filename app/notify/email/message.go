package email

import (
	"context"
	"fmt"
	"strings"
	"time"

	mail "github.com/wneessen/go-mail"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
	emailview "github.com/verifier/controlplane/views/email"
)

// Limits that keep one email readable. SMTP itself has no such limits:
// go-mail folds and encodes long lines.
const (
	MaxAlerts       = 100 // alerts listed in one email, firing first
	MaxSubjectRunes = 200
	maxFieldRunes   = 1000 // characters of one worker-supplied field
)

// buildView returns the content of the email for n at now. Lists longer than
// MaxAlerts end with an "and N more" line.
func buildView(n fleet.Notification, now time.Time) emailview.Notification {
	view := emailview.Notification{Title: notify.Truncate(notify.Title(n), MaxSubjectRunes), URL: n.URL}

	firing, moreFiring := notify.Split(n.Firing, MaxAlerts)
	resolved, moreResolved := notify.Split(n.Resolved, MaxAlerts-len(firing))
	view.Sections = appendSection(view.Sections, "Firing", fleet.AlertFiring, firing, moreFiring, now)
	view.Sections = appendSection(view.Sections, "Resolved", fleet.AlertResolved, resolved, moreResolved, now)
	return view
}

// appendSection appends the section of one status to sections, unless it
// has no alerts at all.
func appendSection(sections []emailview.Section, heading string, status fleet.AlertStatus, shown []fleet.Alert, more int, now time.Time) []emailview.Section {
	if len(shown)+more == 0 {
		return sections
	}
	section := emailview.Section{Heading: fmt.Sprintf("%s (%d)", heading, len(shown)+more)}
	for _, a := range shown {
		section.Alerts = append(section.Alerts, emailview.Alert{
			Summary: field(a.Summary),
			Subject: field(a.Subject()),
			Since:   notify.FormatSince(a, now),
			Value:   notify.FormatValue(a),
		})
	}
	if more > 0 {
		section.More = notify.More(more, status)
	}
	return append(sections, section)
}

// field returns worker-supplied text on one line and shortened. The HTML
// template escapes it.
func field(s string) string {
	return notify.Truncate(notify.OneLine(s), maxFieldRunes)
}

// buildMessage returns the email for n: a text/plain part and a text/html
// alternative rendered from the same view. A template error is returned with
// notify.ReasonTemplate and an address error with notify.ReasonConfig.
func (n *Notifier) buildMessage(ctx context.Context, notification fleet.Notification) (*mail.Msg, error) {
	view := buildView(notification, n.Now())
	var html strings.Builder
	// Rendering does no I/O, so a cancelled ctx is left for the dial step
	// to report rather than passed off as a template error.
	if err := emailview.NotificationEmail(view).Render(context.WithoutCancel(ctx), &html); err != nil {
		return nil, notify.WithReason(notify.ReasonTemplate, fmt.Errorf("render email template: %w", err))
	}

	msg := mail.NewMsg()
	if err := msg.From(n.cfg.From); err != nil {
		return nil, notify.WithReason(notify.ReasonConfig, fmt.Errorf("invalid SMTP_FROM %q: %w", n.cfg.From, err))
	}
	if err := msg.To(n.cfg.To...); err != nil {
		return nil, notify.WithReason(notify.ReasonConfig, fmt.Errorf("invalid SMTP_TO: %w", err))
	}
	msg.Subject(view.Title)
	msg.SetDate()
	msg.SetMessageID()
	// RFC 3834: the message is machine-generated, so auto-responders stay
	// quiet.
	msg.SetGenHeader(mail.Header("Auto-Submitted"), "auto-generated")
	msg.SetBodyString(mail.TypeTextPlain, view.PlainText())
	msg.AddAlternativeString(mail.TypeTextHTML, html.String())
	return msg, nil
}
