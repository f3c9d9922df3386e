package web

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/history"
	"github.com/verifier/controlplane/app/mysql"
	"github.com/verifier/controlplane/views"
)

// chartRanges maps a range parameter to its length.
var chartRanges = map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour}

// mysqlTimeout bounds a page's wait for MySQL, so a slow database shows an
// error instead of a hanging page.
const mysqlTimeout = 5 * time.Second

// chartPoints caps the points of one series, so a 7-day chart stays small.
const chartPoints = 300

// SetHistory connects the charts and the Audit page to MySQL history; nil
// (the default) shows how to turn history on.
func (u *UI) SetHistory(conn *history.Conn) {
	u.history = conn
}

func (u *UI) historyOn() bool { return u.history != nil }

// overviewCharts are the overview's charts for the pool filter (all pools
// when empty).
func overviewCharts(pool string) []views.Chart {
	q := "range=1h"
	if pool != "" {
		q += "&pool=" + url.QueryEscape(pool)
	}
	base := UIPrefix + "/charts/pools?" + q + "&chart="
	return []views.Chart{
		{ID: "chart-status", Title: "Live workers by status", URL: base + "status"},
		{ID: "chart-jobs", Title: "Jobs per minute", URL: base + "jobs"},
		{ID: "chart-errors", Title: "Error rate (%)", URL: base + "errors"},
	}
}

func workerCharts(id string) []views.Chart {
	base := UIPrefix + "/charts/workers/" + id + "?range=1h&chart="
	return []views.Chart{
		{ID: "chart-counters", Title: "Processed and failed jobs", URL: base + "jobs"},
		{ID: "chart-memory", Title: "Memory (MB)", URL: base + "memory"},
	}
}

// chartJSON is the shape the dashboard's chart script reads.
type chartJSON struct {
	Labels   []time.Time   `json:"labels"`
	Datasets []datasetJSON `json:"datasets"`
}

type datasetJSON struct {
	Label string    `json:"label"`
	Data  []float64 `json:"data"`
}

// chartDatasets keeps the datasets a chart shows, in order.
var chartDatasets = map[string][]string{
	"status": {mysql.LabelRunning, mysql.LabelPaused, mysql.LabelDraining, mysql.LabelStopped, mysql.LabelStale},
	"jobs":   {mysql.LabelJobsPerMinute},
	"errors": {mysql.LabelErrorRate},
}

var workerDatasets = map[string][]string{
	"jobs":   {mysql.LabelProcessed, mysql.LabelFailed},
	"memory": {mysql.LabelMemoryMB},
}

func parseRange(c *fiber.Ctx) (since, until time.Time, err error) {
	d, ok := chartRanges[c.Query("range", "1h")]
	if !ok {
		return since, until, fleet.Errorf(fleet.EINVALID, "range", "range must be 1h, 24h or 7d")
	}
	until = time.Now().UTC()
	return until.Add(-d), until, nil
}

func (u *UI) historyDB() (*mysql.DB, error) {
	if u.history == nil {
		return nil, fleet.Errorf(fleet.ENOTFOUND, "", "history is off: set MYSQL_DSN to keep snapshots")
	}
	db := u.history.DB()
	if db == nil {
		return nil, &fleet.Error{Code: fleet.EUNAVAILABLE, Dependency: "mysql", Message: "history is not connected to MySQL yet; retrying in the background"}
	}
	return db, nil
}

// mysqlUnavailable marks a failed history query as MySQL being unavailable,
// so it is counted and reported as such, not as an internal error. Input
// errors pass through.
func mysqlUnavailable(err error) error {
	if code := fleet.ErrorCode(err); code != fleet.EINTERNAL {
		return err
	}
	return fmt.Errorf("history query: %w (%v)", &fleet.Error{Code: fleet.EUNAVAILABLE, Dependency: "mysql", Message: "history (MySQL) is unavailable; try again shortly"}, err)
}

func (u *UI) handlePoolChart(c *fiber.Ctx) error {
	since, until, err := parseRange(c)
	if err != nil {
		return err
	}
	pool := c.Query("pool")
	if pool != "" {
		if err := fleet.ValidateName("pool", pool); err != nil {
			return err
		}
	}
	keep, ok := chartDatasets[c.Query("chart", "status")]
	if !ok {
		return fleet.Errorf(fleet.EINVALID, "chart", "chart must be status, jobs or errors")
	}
	db, err := u.historyDB()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(c.UserContext(), mysqlTimeout)
	defer cancel()
	s, err := db.PoolSeries(ctx, mysql.SeriesQuery{Pool: pool, Since: since, Until: until, MaxPoints: chartPoints})
	if err != nil {
		return mysqlUnavailable(err)
	}
	return c.JSON(pick(s, keep))
}

func (u *UI) handleWorkerChart(c *fiber.Ctx) error {
	since, until, err := parseRange(c)
	if err != nil {
		return err
	}
	id := c.Params("id")
	if err := fleet.ValidateName("id", id); err != nil {
		return err
	}
	keep, ok := workerDatasets[c.Query("chart", "jobs")]
	if !ok {
		return fleet.Errorf(fleet.EINVALID, "chart", "chart must be jobs or memory")
	}
	db, err := u.historyDB()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(c.UserContext(), mysqlTimeout)
	defer cancel()
	s, err := db.WorkerSeries(ctx, id, since, until, chartPoints)
	if err != nil {
		return mysqlUnavailable(err)
	}
	return c.JSON(pick(s, keep))
}

func pick(s mysql.Series, keep []string) chartJSON {
	out := chartJSON{Labels: s.Labels, Datasets: []datasetJSON{}}
	if out.Labels == nil {
		out.Labels = []time.Time{}
	}
	for _, name := range keep {
		if d := s.Dataset(name); d != nil {
			out.Datasets = append(out.Datasets, datasetJSON{Label: d.Label, Data: d.Data})
		}
	}
	return out
}

// handleAudit lists audit entries from MySQL when history is on, else from
// the capped Redis list.
func (u *UI) handleAudit(c *fiber.Ctx) error {
	f := views.AuditFilter{
		Worker: c.Query("worker"), Pool: c.Query("pool"), Actor: c.Query("actor"), Kind: c.Query("kind"),
		Since: c.Query("since"), Until: c.Query("until"),
	}
	since, err := parseLocalTime("since", f.Since)
	if err != nil {
		return err
	}
	until, err := parseLocalTime("until", f.Until)
	if err != nil {
		return err
	}
	before, _ := strconv.ParseInt(c.Query("before"), 10, 64)
	d := views.AuditData{Filter: f}

	if db, err := u.historyDB(); err == nil {
		ctx, cancel := context.WithTimeout(c.UserContext(), mysqlTimeout)
		defer cancel()
		recs, err := db.ListAudit(ctx, mysql.AuditFilter{
			WorkerID: f.Worker, Pool: f.Pool, Actor: f.Actor, Kind: f.Kind, Since: since, Until: until,
			Limit: 100, BeforeID: before,
		})
		if err == nil {
			for _, r := range recs {
				d.Rows = append(d.Rows, views.AuditRow{ID: r.ID, Entry: r.AuditEntry})
			}
			d.Source = "From MySQL history, newest first."
			if len(recs) == 100 {
				d.NextBefore = recs[len(recs)-1].ID
				q := c.Request().URI().QueryArgs()
				q.Set("before", strconv.FormatInt(d.NextBefore, 10))
				d.NextQuery = string(q.QueryString())
			}
			return render(c, fiber.StatusOK, views.AuditPage(u.page("Audit", "audit", ""), d))
		}
		if fleet.ErrorCode(err) == fleet.EINVALID {
			return err
		}
		u.svc.Log().Warn("audit page: MySQL query failed; showing the Redis list", "err", err)
		d.Source = "MySQL history is unavailable right now, so this is the last 10,000 entries kept in Redis."
	}

	entries, err := u.svc.Audit(c.UserContext(), "", 10_000)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if matchAudit(e, f, since, until) && len(d.Rows) < 500 {
			d.Rows = append(d.Rows, views.AuditRow{Entry: e})
		}
	}
	if d.Source == "" {
		d.Source = "From the last 10,000 entries kept in Redis. Set MYSQL_DSN to keep the whole trail."
	}
	return render(c, fiber.StatusOK, views.AuditPage(u.page("Audit", "audit", ""), d))
}

func matchAudit(e fleet.AuditEntry, f views.AuditFilter, since, until time.Time) bool {
	switch {
	case f.Worker != "" && e.WorkerID != f.Worker,
		f.Pool != "" && e.Pool != f.Pool,
		f.Actor != "" && !strings.EqualFold(e.Actor, f.Actor),
		f.Kind != "" && e.Kind != f.Kind,
		!since.IsZero() && e.At.Before(since),
		!until.IsZero() && !e.At.Before(until):
		return false
	}
	return true
}

// parseLocalTime reads a datetime-local input, which has no zone, as UTC,
// as the form's label states.
func parseLocalTime(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fleet.Errorf(fleet.EINVALID, field, "%s must be a time such as 2026-12-04T10:00 (UTC)", field)
}
