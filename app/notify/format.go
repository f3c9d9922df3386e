package notify

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/verifier/controlplane/app/fleet"
)

// Ellipsis ends text that Truncate shortened.
const Ellipsis = "…"

// Truncate returns s cut to at most limit runes, the last of them Ellipsis
// when s was longer.
func Truncate(s string, limit int) string {
	if utf8.RuneCountInString(s) <= limit {
		return s
	}
	if limit <= 0 {
		return ""
	}
	runes := []rune(s)
	return string(runes[:limit-1]) + Ellipsis
}

// OneLine replaces each control character of s (newlines, tabs, escape
// sequences) with a space, so that worker-supplied text cannot start a new
// line in a subject or a list.
func OneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// More returns the line that ends a shortened list, such as
// "and 3 more firing alerts".
func More(n int, status fleet.AlertStatus) string {
	noun := "alerts"
	if n == 1 {
		noun = "alert"
	}
	return fmt.Sprintf("and %d more %s %s", n, status, noun)
}

// Split returns the first limit alerts of alerts and how many were left out.
func Split(alerts []fleet.Alert, limit int) (shown []fleet.Alert, more int) {
	limit = min(max(limit, 0), len(alerts))
	return alerts[:limit], len(alerts) - limit
}

// FormatValue returns an alert's measured value against its threshold, such
// as "95 s (threshold 30 s)" or "12.5% (threshold 10%)", or "" when the alert
// has no value, threshold or unit.
func FormatValue(a fleet.Alert) string {
	if a.Value == 0 && a.Threshold == 0 && a.Unit == "" {
		return ""
	}
	return fmt.Sprintf("%s (threshold %s)", formatQuantity(a.Value, a.Unit), formatQuantity(a.Threshold, a.Unit))
}

// formatQuantity returns v rounded to two decimals, followed by unit.
func formatQuantity(v float64, unit string) string {
	number := strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
	switch unit {
	case "":
		return number
	case "%":
		return number + "%"
	default:
		return number + " " + unit
	}
}

// FormatSince returns when an alert started, in UTC as RFC 3339, and how long
// it has lasted at now, such as "2026-01-02T15:04:05Z (for 5m)". For a
// resolved alert it adds the end: "2026-01-02T15:04:05Z to
// 2026-01-02T15:09:05Z (lasted 5m)".
func FormatSince(a fleet.Alert, now time.Time) string {
	start := a.StartsAt.UTC().Format(time.RFC3339)
	if a.Status == fleet.AlertResolved {
		end := a.EndsAt
		if end.IsZero() {
			end = now
		}
		return fmt.Sprintf("%s to %s (lasted %s)", start, end.UTC().Format(time.RFC3339), FormatDuration(end.Sub(a.StartsAt)))
	}
	return fmt.Sprintf("%s (for %s)", start, FormatDuration(now.Sub(a.StartsAt)))
}

// FormatDuration returns d in at most two units, rounded down, such as "45s",
// "5m", "1h30m" or "2d4h". Negative durations, from clock skew between
// replicas, count as zero.
func FormatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	const day = 24 * time.Hour
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < day:
		return twoUnits(int(d/time.Hour), "h", int(d%time.Hour/time.Minute), "m")
	default:
		return twoUnits(int(d/day), "d", int(d%day/time.Hour), "h")
	}
}

// twoUnits returns "1h30m", or "1h" when the smaller unit is zero.
func twoUnits(big int, bigUnit string, small int, smallUnit string) string {
	if small == 0 {
		return strconv.Itoa(big) + bigUnit
	}
	return strconv.Itoa(big) + bigUnit + strconv.Itoa(small) + smallUnit
}
