// Package views holds the dashboard's templ components: one file per page,
// plus the fragments that both the first render and every live update use.
package views

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Prefix is the URL prefix of every dashboard page.
const Prefix = "/verifier-engine-room"

// Swap targets. Each constant is both the id of the element that a live
// update replaces and the name of the Server-Sent Event that carries it.
const (
	EventSummary  = "summary"
	EventPools    = "pools"
	EventWorkers  = "workers"
	EventWorker   = "worker"
	EventActivity = "activity"
	EventAlerts   = "alerts"
	EventStatus   = "store-status"
)

// RowEvent returns the event name and element id of one worker's row.
// Worker ids match [A-Za-z0-9._-], so they are safe in both.
func RowEvent(id string) string { return "row-" + id }

// PoolRowEvent returns the element id of one pool's row.
func PoolRowEvent(pool string) string { return "pool-" + pool }

// IDSelector returns a CSS selector for the element with id. Ids hold
// worker and pool names, whose dots would otherwise read as classes.
func IDSelector(id string) string {
	var b strings.Builder
	b.WriteByte('#')
	for _, r := range id {
		if r == '.' || r == ':' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Page is what every page's layout needs.
type Page struct {
	Title string
	Nav   string // the active navigation entry
	CSRF  string
	CSS   string // URL of the stylesheet, with its content hash
	JS    string // URL of the script bundle, with its content hash
	// Stream is the URL of this page's one event stream, or empty.
	Stream string
	// StoreDown is set when Redis could not be read for this page.
	StoreDown bool
}

// Summary is the overview's headline numbers.
type Summary struct {
	Live     int
	ByStatus map[fleet.State]int
	Stale    int
	Pools    int
	// HeartbeatsPerMinute counts heartbeats received in the last full minute.
	HeartbeatsPerMinute int64
	// ErrorRate is failed over processed jobs in percent over the recent
	// window; HasErrorRate is false before the first sample.
	ErrorRate    float64
	HasErrorRate bool
	ErrorWindow  string
	// LastSnapshot says when history last succeeded, or is empty without MySQL.
	LastSnapshot string
	// Unknown is set when Redis could not be read: the numbers are shown as
	// unknown, not as an empty fleet.
	Unknown bool
}

// count formats a summary number, or "—" when it is unknown.
func (s Summary) count(n int) string {
	if s.Unknown {
		return "—"
	}
	return strconv.Itoa(n)
}

// WorkerList is the workers table of the overview: a page of rows and the
// filter that selected them.
type WorkerList struct {
	Rows   []*fleet.Worker
	Pool   string
	Status string
	Stale  string
	Query  string
	Sort   string
	Limit  int
	Offset int
	Total  int
	Now    time.Time
}

// Overview is the overview page.
type Overview struct {
	Page       Page
	Summary    Summary
	Pools      []*fleet.Pool
	Workers    WorkerList
	MaxDesired int
	Activity   []fleet.AuditEntry
	// HistoryOn is set when MySQL history is configured.
	HistoryOn bool
	Charts    []Chart
}

// WorkerDetail is the worker page.
type WorkerDetail struct {
	Page      Page
	Worker    *fleet.Worker
	History   []fleet.AuditEntry
	Now       time.Time
	HistoryOn bool
	Charts    []Chart
}

// QueryString returns the list's filter as a query string, with offset and
// sort replaced when given (offset < 0 and sort "" keep the current ones).
func (l WorkerList) QueryString(offset int, sort string) string {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("pool", l.Pool)
	set("status", l.Status)
	set("stale", l.Stale)
	set("q", l.Query)
	if sort == "" {
		sort = l.Sort
	}
	if sort != "" && sort != "id" {
		v.Set("sort", sort)
	}
	if offset < 0 {
		offset = l.Offset
	}
	if offset > 0 {
		v.Set("offset", strconv.Itoa(offset))
	}
	if l.Limit != 0 && l.Limit != 100 {
		v.Set("limit", strconv.Itoa(l.Limit))
	}
	return v.Encode()
}

// SortLink returns the query string that sorts by key, toggling direction
// when the list is already sorted by it.
func (l WorkerList) SortLink(key string) string {
	next := key
	if l.Sort == key {
		next = "-" + key
	}
	return l.QueryString(0, next)
}

// SortMark returns an arrow for the column the list is sorted by.
func (l WorkerList) SortMark(key string) string {
	switch l.Sort {
	case key:
		return " ▲"
	case "-" + key:
		return " ▼"
	}
	return ""
}

// AriaSort returns the aria-sort value of a column header.
func (l WorkerList) AriaSort(key string) string {
	switch l.Sort {
	case key:
		return "ascending"
	case "-" + key:
		return "descending"
	}
	return "none"
}

// Showing returns "1–100 of 250".
func (l WorkerList) Showing() string {
	if l.Total == 0 {
		return "no workers match"
	}
	return fmt.Sprintf("%d–%d of %d", l.Offset+1, l.Offset+len(l.Rows), l.Total)
}

// StatusBadge returns the badge class for what an operator should see.
func StatusBadge(w *fleet.Worker) string {
	if w.Stale {
		return "badge badge-offline"
	}
	return "badge badge-" + string(w.Status)
}

// StateBadge returns the badge class of a state.
func StateBadge(s fleet.State) string { return "badge badge-" + string(s) }

// Allowed reports whether action makes sense for w right now.
func Allowed(w *fleet.Worker, action fleet.Action) bool {
	_, err := fleet.Transition(action, w.Desired, w.Status)
	return err == nil
}

// Age returns a short duration such as "4s", "3m 20s" or "2d 3h".
func Age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Timestamp formats t for a datetime attribute.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Clock formats t for people, in UTC.
func Clock(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// Number formats a metric without a needless fraction.
func Number(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// Percent formats an error rate.
func Percent(v float64, ok bool) string {
	if !ok {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + "%"
}

// WorkerErrorRate formats a worker's lifetime error rate.
func WorkerErrorRate(w *fleet.Worker) string { return Percent(w.ErrorRate()) }

// Metric formats one metric of a worker, or "—" when absent.
func Metric(w *fleet.Worker, key string) string {
	v, ok := w.Metrics[key]
	if !ok {
		return "—"
	}
	return Number(v)
}

// DesiredCount formats a pool's desired count.
func DesiredCount(p *fleet.Pool) string {
	if !p.HasDesired {
		return "not set"
	}
	return strconv.Itoa(p.DesiredCount)
}

// ScaleValue is the scale input's initial value.
func ScaleValue(p *fleet.Pool) string {
	if !p.HasDesired {
		return ""
	}
	return strconv.Itoa(p.DesiredCount)
}

// PoolHealth describes a pool's size against its desired count.
func PoolHealth(p *fleet.Pool) string {
	switch {
	case !p.HasDesired:
		return ""
	case p.Shortfall() > 0:
		return fmt.Sprintf("%d short", p.Shortfall())
	case p.Surplus() > 0:
		return fmt.Sprintf("%d over", p.Surplus())
	}
	return "at size"
}

// Skew describes a worker's clock skew.
func Skew(d time.Duration) string {
	if d < 0 {
		return Age(-d) + " behind"
	}
	return Age(d) + " ahead"
}

// Since returns "since 3m 20s" for the time since a command.
func Since(now, t time.Time) string { return Age(now.Sub(t)) + " ago" }

// Title capitalises a state for buttons.
func Title(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Confirm returns the confirmation text of an action, or "" when it needs
// none: drain and stop end a worker, so they ask first.
func Confirm(action fleet.Action, subject string) string {
	switch action {
	case fleet.ActionDrain:
		return fmt.Sprintf("Drain %s? It finishes its current job, then exits.", subject)
	case fleet.ActionStop:
		return fmt.Sprintf("Stop %s? It exits without taking new jobs.", subject)
	}
	return ""
}

// StatusOptions lists the status filter's choices.
var StatusOptions = []string{"running", "paused", "draining", "stopped", "offline"}

// Actions lists the worker actions in button order.
var Actions = []fleet.Action{fleet.ActionPause, fleet.ActionResume, fleet.ActionDrain, fleet.ActionStop}

// PoolActions lists the pool-wide actions.
var PoolActions = []fleet.Action{fleet.ActionPause, fleet.ActionResume, fleet.ActionDrain}
