// Package email renders alert notification emails: an HTML part with templ
// and a plain-text part, both from the same Notification.
package email

import (
	"strings"
)

// Notification is the content of one alert email. Every field is plain text;
// the HTML part escapes it, so worker-supplied text cannot inject markup.
type Notification struct {
	Title    string
	Sections []Section // firing first, then resolved; empty sections are left out
	URL      string    // the Alerts page; empty when PUBLIC_URL is unset
}

// Section lists the alerts of one status.
type Section struct {
	Heading string // such as "Firing (3)"
	Alerts  []Alert
	More    string // such as "and 5 more firing alerts"; empty when all are listed
}

// Alert is one alert as the email shows it.
type Alert struct {
	Summary string // what is wrong
	Subject string // where, such as "worker w-01 in pool billing"
	Since   string // such as "2026-01-02T15:04:05Z (for 5m)"
	Value   string // such as "95 s (threshold 30 s)"; empty when the rule has none
}

// PlainText returns the text/plain part of the email.
func (n Notification) PlainText() string {
	var b strings.Builder
	b.WriteString(n.Title + "\n")
	for _, s := range n.Sections {
		b.WriteString("\n" + s.Heading + "\n")
		for _, a := range s.Alerts {
			b.WriteString("\n- " + a.Summary + "\n")
			b.WriteString("  Where: " + a.Subject + "\n")
			if a.Value != "" {
				b.WriteString("  Value: " + a.Value + "\n")
			}
			b.WriteString("  Since: " + a.Since + "\n")
		}
		if s.More != "" {
			b.WriteString("\n" + s.More + "\n")
		}
	}
	if n.URL != "" {
		b.WriteString("\nAlerts page: " + n.URL + "\n")
	}
	return b.String()
}
