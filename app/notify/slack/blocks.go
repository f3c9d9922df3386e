package slack

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
)

// Slack's Block Kit limits, from its block reference
// (https://docs.slack.dev/reference/block-kit/blocks).
const (
	MaxBlocks      = 50   // blocks in one message
	MaxHeaderText  = 150  // characters of a header block's text
	MaxSectionText = 3000 // characters of a section block's text
)

// maxFieldRunes bounds each worker-supplied field of an alert section before
// escaping. Escaping turns one character into at most five (& to &amp;), so
// two such fields plus the labels stay under MaxSectionText.
const maxFieldRunes = 250

// payload is the JSON body of an incoming webhook request.
type payload struct {
	// Text is the fallback shown in notifications and by clients that
	// cannot render blocks.
	Text   string  `json:"text"`
	Blocks []block `json:"blocks"`
}

type block struct {
	Type string `json:"type"` // header or section
	Text *text  `json:"text,omitempty"`
}

type text struct {
	Type string `json:"type"` // plain_text or mrkdwn
	Text string `json:"text"`
	// Verbatim stops Slack from turning bare URLs, channel names and
	// @-mentions in the text into links.
	Verbatim bool `json:"verbatim,omitempty"`
}

func header(s string) block {
	return block{Type: "header", Text: &text{Type: "plain_text", Text: notify.Truncate(s, MaxHeaderText)}}
}

func section(mrkdwn string) block {
	return block{Type: "section", Text: &text{Type: "mrkdwn", Text: mrkdwn, Verbatim: true}}
}

// buildPayload returns the message for n at now: a header with the title, a
// heading and one section per alert for firing then resolved alerts, and a
// link to the Alerts page when n.URL is set. Lists that would take Slack over
// MaxBlocks end with an "and N more" section.
func buildPayload(n fleet.Notification, now time.Time) payload {
	title := notify.Title(n)
	blocks := []block{header(title)}

	var link []block
	if n.URL != "" {
		link = append(link, section(fmt.Sprintf("<%s|Open the Alerts page>", escapeURL(n.URL))))
	}

	groups := []struct {
		heading string
		status  fleet.AlertStatus
		alerts  []fleet.Alert
	}{
		{":red_circle: *Firing*", fleet.AlertFiring, n.Firing},
		{":white_check_mark: *Resolved*", fleet.AlertResolved, n.Resolved},
	}
	remaining := MaxBlocks - len(blocks) - len(link)
	for i, g := range groups {
		if len(g.alerts) == 0 {
			continue
		}
		// Keep a heading and one more block for each later group.
		reserved := 0
		for _, later := range groups[i+1:] {
			if len(later.alerts) > 0 {
				reserved += 2
			}
		}
		slots := remaining - 1 - reserved
		shown, more := notify.Split(g.alerts, slots)
		if more > 0 {
			shown, more = notify.Split(g.alerts, slots-1)
		}

		blocks = append(blocks, section(fmt.Sprintf("%s (%d)", g.heading, len(g.alerts))))
		for _, a := range shown {
			blocks = append(blocks, section(alertText(a, now)))
		}
		if more > 0 {
			blocks = append(blocks, section("_"+notify.More(more, g.status)+"_"))
		}
		remaining = MaxBlocks - len(blocks) - len(link)
	}
	blocks = append(blocks, link...)

	return payload{Text: escape(notify.Truncate(title, MaxHeaderText)), Blocks: blocks}
}

// alertText returns the mrkdwn text of one alert's section: its summary,
// where it is, its value against the threshold and since when.
func alertText(a fleet.Alert, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s*\n", field(a.Summary))
	fmt.Fprintf(&b, "Where: %s\n", field(a.Subject()))
	if value := notify.FormatValue(a); value != "" {
		fmt.Fprintf(&b, "Value: %s\n", escape(value))
	}
	fmt.Fprintf(&b, "Since: %s", notify.FormatSince(a, now))
	return b.String()
}

// field returns worker-supplied text on one line, shortened and escaped.
func field(s string) string {
	return escape(notify.Truncate(notify.OneLine(s), maxFieldRunes))
}

// entityReplacer escapes the three characters that Slack's mrkdwn reserves.
// This also disarms <!channel>, <!here> and user mentions such as <@U123>.
var entityReplacer = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// broadcastRE matches the bare broadcast mentions that Slack may still
// notify on without angle brackets.
var broadcastRE = regexp.MustCompile(`(?i)@(channel|here|everyone)\b`)

// escape returns s safe to put in mrkdwn text. A word joiner (U+2060) after
// the @ of a broadcast mention keeps it from notifying anyone while it reads
// the same.
func escape(s string) string {
	return broadcastRE.ReplaceAllString(entityReplacer.Replace(s), "@\u2060$1")
}

// escapeURL returns u safe to put in a mrkdwn link: escaped like text, and
// with | percent-encoded because it separates a link from its label.
func escapeURL(u string) string {
	return escape(strings.ReplaceAll(u, "|", "%7C"))
}
