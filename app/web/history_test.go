package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/mysql"
	"github.com/verifier/controlplane/app/simulate"
	"github.com/verifier/controlplane/app/web"
	"github.com/verifier/controlplane/views"
)

// waitForMySQLAudit polls the replica's MySQL until it contains want audit
// entries, and fails after timeout.
func (r *historyReplica) waitForMySQLAudit(want int, timeout time.Duration) []mysql.AuditRecord {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var recs []mysql.AuditRecord
		var err error
		if db := r.app.History.DB(); db != nil {
			recs, err = db.ListAudit(context.Background(), mysql.AuditFilter{Limit: mysql.MaxAuditLimit})
		}
		if err == nil && len(recs) >= want {
			return recs
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("MySQL holds %d audit entries after %v, want %d (last error: %v)", len(recs), timeout, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	auditBodyPattern = regexp.MustCompile(`(?s)<tbody>(.*?)</tbody>`)
	auditRowPattern  = regexp.MustCompile(`(?s)<tr>(.*?)</tr>`)
	auditLinkPattern = regexp.MustCompile(`/workers/([A-Za-z0-9._-]+)"`)
)

// auditSubjects returns, for each row of the Audit page, newest first, the
// worker id the row links to, or "scale" for a pool's scale entry.
func auditSubjects(t *testing.T, page string) []string {
	t.Helper()
	body := auditBodyPattern.FindStringSubmatch(page)
	if body == nil {
		t.Fatalf("the audit page has no table body:\n%s", page)
	}
	subjects := []string{}
	for _, row := range auditRowPattern.FindAllStringSubmatch(body[1], -1) {
		if strings.Contains(row[1], "No entries match.") {
			continue
		}
		if m := auditLinkPattern.FindStringSubmatch(row[1]); m != nil {
			subjects = append(subjects, m[1])
		} else if strings.Contains(row[1], "scale") {
			subjects = append(subjects, "scale")
		} else {
			subjects = append(subjects, "?"+row[1])
		}
	}
	return subjects
}

func TestAuditPageFiltersMySQLHistory(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn, follower: true})

	r.heartbeat("w-01", "billing", "running", 1, 0)
	r.heartbeat("w-02", "reports", "running", 1, 0)
	if status, _, body := r.do(http.MethodPost, "/api/workers/w-01/pause", "", map[string]string{"Authorization": bearer()}); status != http.StatusOK {
		t.Fatalf("API pause of w-01: status %d, body %s", status, body)
	}
	if status, body := r.click("alice", "/workers/w-02/drain", ""); status != http.StatusOK {
		t.Fatalf("UI drain of w-02: status %d, body %s", status, body)
	}
	if status, _, body := r.do(http.MethodPost, "/api/pools/billing/scale", `{"desired_count":4}`,
		map[string]string{"Authorization": bearer(), "Content-Type": "application/json"}); status != http.StatusOK {
		t.Fatalf("API scale of billing: status %d, body %s", status, body)
	}
	r.waitForMySQLAudit(3, 5*time.Second)

	// Two older silences at known instants, for the time filters.
	for _, e := range []fleet.AuditEntry{
		{At: time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC), Actor: "carol", Source: fleet.SourceUI, Kind: fleet.AuditSilence, Action: "silence", WorkerID: "w-old"},
		{At: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), Actor: "carol", Source: fleet.SourceUI, Kind: fleet.AuditSilence, Action: "silence", WorkerID: "w-new"},
	} {
		if err := r.app.History.DB().AppendAudit(context.Background(), e); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
	}

	cases := []struct {
		query string
		want  []string
	}{
		{"", []string{"w-new", "w-old", "scale", "w-02", "w-01"}},
		{"worker=w-01", []string{"w-01"}},
		{"pool=reports", []string{"w-02"}},
		{"pool=billing", []string{"scale", "w-01"}},
		{"actor=alice", []string{"w-02"}},
		{"actor=api", []string{"scale", "w-01"}},
		{"kind=scale", []string{"scale"}},
		{"kind=silence", []string{"w-new", "w-old"}},
		{"since=2026-01-01T11:00", []string{"w-new", "scale", "w-02", "w-01"}},
		{"until=2026-01-01T11:00", []string{"w-old"}},
		{"since=2026-01-01T12:00&until=2026-01-01T12:01", []string{"w-new"}},
		{"until=2026-01-01T12:00", []string{"w-old"}},
		{"since=2026-01-01T09:00:00&until=2026-01-01T12:00:01", []string{"w-new", "w-old"}},
		{"actor=carol&kind=silence&since=2026-01-01T11:00", []string{"w-new"}},
		{"worker=w-01&kind=scale", []string{}},
	}
	for _, c := range cases {
		page := r.page(web.UIPrefix + "/audit?" + c.query)
		if !strings.Contains(page, "From MySQL history") {
			t.Errorf("audit?%s does not read MySQL history", c.query)
		}
		if got := auditSubjects(t, page); !slices.Equal(got, c.want) {
			t.Errorf("audit?%s lists %v, want %v", c.query, got, c.want)
		}
		if len(c.want) == 0 && !strings.Contains(page, "No entries match.") {
			t.Errorf("audit?%s lists nothing without saying so", c.query)
		}
	}

	for _, field := range []string{"since", "until"} {
		status, _, body := r.do(http.MethodGet, web.UIPrefix+"/audit?"+field+"=yesterday", "", map[string]string{"Authorization": basic("operator")})
		if status != http.StatusBadRequest {
			t.Errorf("audit?%s=yesterday: status %d, want 400", field, status)
			continue
		}
		var e historyError
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Field != field {
			t.Errorf("audit?%s=yesterday: body %s, want an error naming %s", field, body, field)
		}
	}
}

// Every audit value is shown escaped, including the Basic-auth username, a
// reason typed in the UI and every field of an entry written by another tool.
func TestAuditPageEscapesEveryValue(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn, follower: true})
	r.heartbeat("w-01", "billing", "running", 1, 0)

	const actor = `<script>alert("actor")</script>`
	const reason = `<img src=x onerror=alert("reason")>`
	if status, body := r.click(actor, "/workers/w-01/pause", "reason="+url.QueryEscape(reason)); status != http.StatusOK {
		t.Fatalf("UI pause of w-01 as %s: status %d, body %s", actor, status, body)
	}
	raw := fleet.AuditEntry{
		At: time.Now().UTC(), Actor: `<b>bold-actor</b>`, Source: `<i>src</i>`, Kind: `<u>kind</u>`, Action: `<s>act</s>`,
		WorkerID: `"><script>alert("worker")</script>`, Pool: `<em>pool</em>`,
		Before: `<before-tag>`, After: `</td><td>after`, Reason: `<script>alert("raw reason")</script>`,
	}
	if err := r.app.History.DB().AppendAudit(context.Background(), raw); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	recs := r.waitForMySQLAudit(2, 5*time.Second)
	stored := false
	for _, rec := range recs {
		if rec.Actor == actor && rec.Reason == reason && rec.Source == fleet.SourceUI {
			stored = true
		}
	}
	if !stored {
		t.Errorf("MySQL does not hold the pause by %q with reason %q as typed: %+v", actor, reason, recs)
	}

	unescaped := []string{
		`<script>alert("actor")`, `<img src=x`, `<b>bold-actor`, `<i>src`, `<u>kind`, `<s>act`,
		`"><script>alert("worker")`, `<em>pool`, `<before-tag>`, `</td><td>after`, `<script>alert("raw reason")`,
	}
	for _, query := range []string{"", "actor=" + url.QueryEscape(actor), "reason=x&worker=" + url.QueryEscape(raw.WorkerID)} {
		page := r.page(web.UIPrefix + "/audit?" + query)
		for _, s := range unescaped {
			if strings.Contains(page, s) {
				t.Errorf("audit?%s contains %s unescaped", query, s)
			}
		}
	}
	page := r.page(web.UIPrefix + "/audit")
	for _, s := range []string{"&lt;script&gt;alert(", "&lt;img src=x", "&lt;b&gt;bold-actor", "&lt;before-tag&gt;"} {
		if !strings.Contains(page, s) {
			t.Errorf("the audit page lacks the escaped text %s", s)
		}
	}
	if got := auditSubjects(t, r.page(web.UIPrefix+"/audit?actor="+url.QueryEscape(actor))); !slices.Equal(got, []string{"w-01"}) {
		t.Errorf("audit filtered by the actor %s lists %v, want [w-01]", actor, got)
	}
}

// With MYSQL_DSN and a 5 s snapshot interval, a simulated fleet of six
// workers leaves one snapshot per elapsed period. The overview shows the
// last one, the charts draw them, and a pause clicked in the UI is on the
// Audit page.
func TestHistoryOfSimulatedFleet(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn})
	start := time.Now()

	fleetLogs := &historyLogs{}
	sim, err := simulate.NewFleet(simulate.Config{
		URL: r.base, Token: historyToken, Workers: 6, Pools: 2,
		Interval: 300 * time.Millisecond, FixedInterval: true, JobDuration: 20 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(fleetLogs, nil)))
	if err != nil {
		t.Fatalf("NewFleet: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	stopFleet := sync.OnceValue(func() error { stop(); return <-done })
	t.Cleanup(func() { stopFleet() })

	paused := simulate.WorkerID(simulate.DefaultIDPrefix, simulate.PoolNames(2)[0], 1)
	time.Sleep(2 * time.Second)
	status, body := r.click("e2e-operator", "/workers/"+paused+"/pause", "")
	if status != http.StatusOK {
		t.Fatalf("UI pause of %s: status %d, body %s", paused, status, body)
	}
	if !strings.Contains(body, paused) {
		t.Errorf("the pause click's fragment does not show %s", paused)
	}

	time.Sleep(time.Until(start.Add(12 * time.Second)))
	if err := stopFleet(); err != nil {
		t.Errorf("fleet Run: %v", err)
	}
	end := time.Now()

	const interval = 5 * time.Second
	okBefore, _ := r.metric(`controlplane_snapshots_total{result="ok"}`)
	rows, err := db.check.Query("SELECT period, taken_at, pools, workers FROM snapshot_periods ORDER BY period")
	if err != nil {
		t.Fatalf("read snapshot_periods: %v", err)
	}
	var periods, takenAt []time.Time
	var pools, workers []int
	for rows.Next() {
		var p, at time.Time
		var np, nw int
		if err := rows.Scan(&p, &at, &np, &nw); err != nil {
			t.Fatalf("scan snapshot_periods: %v", err)
		}
		periods, takenAt, pools, workers = append(periods, p), append(takenAt, at), append(pools, np), append(workers, nw)
	}
	rows.Close()
	if len(periods) < 2 {
		t.Fatalf("%d snapshots after %v at a %v interval: %v", len(periods), end.Sub(start).Round(time.Second), interval, periods)
	}
	for i := 1; i < len(periods); i++ {
		if gap := periods[i].Sub(periods[i-1]); gap != interval {
			t.Errorf("snapshot %d is %v after the previous one, want %v (one per period, none missed): %v", i, gap, interval, periods)
		}
	}
	// The snapshot job polls every second, so the first snapshot is of the
	// period the replica started in (give or take its first poll), and
	// every period that began two seconds before the end has its snapshot.
	if first, want := periods[0], start.Add(time.Second).Truncate(interval); first.After(want) {
		t.Errorf("first snapshot period %v, want %v or earlier: the replica started at %v", first, want, start)
	}
	if last, want := periods[len(periods)-1], end.Add(-2*time.Second).Truncate(interval); last.Before(want) {
		t.Errorf("last snapshot period %v, want %v or later: the test ended at %v", last, want, end)
	}
	if n := len(periods); pools[n-1] != 2 || workers[n-1] != 6 {
		t.Errorf("newest snapshot has %d pools and %d workers, want 2 and 6", pools[n-1], workers[n-1])
	}
	var processed float64
	if err := db.check.QueryRow("SELECT COALESCE(SUM(processed), 0) FROM pool_snapshots").Scan(&processed); err != nil {
		t.Fatalf("sum processed: %v", err)
	}
	if processed <= 0 {
		t.Errorf("the snapshots counted %v processed jobs, want some", processed)
	}
	// Read before the rows, so a snapshot taken between the two reads
	// makes one more row than the count, never one less.
	if ok := int(okBefore); len(periods) < ok || len(periods) > ok+1 {
		t.Errorf("snapshots ok = %d, want one per row (%d rows)", ok, len(periods))
	}
	if got, _ := r.metric(`controlplane_snapshots_total{result="failed"}`); got != 0 {
		t.Errorf("snapshots failed = %v, want 0", got)
	}

	overview := r.page(web.UIPrefix + "/overview")
	m := regexp.MustCompile(`Last history snapshot: ([^<]+)<`).FindStringSubmatch(overview)
	if m == nil {
		t.Errorf("the overview does not show the last snapshot time")
	} else {
		// A snapshot may have been taken since the rows were read.
		var clocks []string
		rows, err := db.check.Query("SELECT taken_at FROM snapshot_periods ORDER BY period")
		if err != nil {
			t.Fatalf("read snapshot_periods: %v", err)
		}
		for rows.Next() {
			var at time.Time
			if err := rows.Scan(&at); err != nil {
				t.Fatalf("scan snapshot_periods: %v", err)
			}
			clocks = append(clocks, views.Clock(at))
		}
		rows.Close()
		got := strings.TrimSpace(m[1])
		if !slices.Contains(clocks, got) || got < views.Clock(takenAt[len(takenAt)-1]) {
			t.Errorf("the overview's last snapshot is %q, want the newest of %v", got, clocks)
		}
	}
	if !strings.Contains(overview, `data-chart-url="`+web.UIPrefix+`/charts/pools?range=1h&amp;chart=status"`) {
		t.Errorf("the overview has no status chart")
	}
	if page := r.page(web.UIPrefix + "/workers/" + paused); !strings.Contains(page, web.UIPrefix+"/charts/workers/"+paused+"?range=1h&amp;chart=jobs") {
		t.Errorf("the page of %s has no jobs chart", paused)
	}
	status1h := r.chart("/charts/pools?range=1h&chart=status")
	if len(status1h.Labels) == 0 {
		t.Errorf("the 1h status chart has no points")
	} else if running := status1h.Datasets[0]; running.Label != "running" || running.Data[len(running.Data)-1] <= 0 {
		t.Errorf("the 1h status chart's newest point has no running workers: %+v", status1h.Datasets)
	}
	// A 1 h chart has buckets of at least 12 s, so the few snapshots of
	// the run may share one.
	if c := r.chart("/charts/workers/" + paused + "?range=1h&chart=jobs"); len(c.Labels) == 0 {
		t.Errorf("the 1h jobs chart of %s has no points", paused)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		page := r.page(web.UIPrefix + "/audit?worker=" + paused)
		subjects := auditSubjects(t, page)
		if len(subjects) == 1 && strings.Contains(page, "e2e-operator (ui)") && strings.Contains(page, "pause") &&
			strings.Contains(page, "From MySQL history") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the audit page does not list the pause of %s by e2e-operator (rows %v)", paused, subjects)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(r.logs.String(), "invalid connection") {
		t.Errorf("the replica's log has \"invalid connection\":\n%s", r.logs.String())
	}
}

func TestAuditPagePagesOlderEntries(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn, follower: true})
	at := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	for i := range 105 {
		e := fleet.AuditEntry{At: at.Add(time.Duration(i) * time.Second), Actor: "carol", Source: fleet.SourceUI,
			Kind: fleet.AuditCommand, Action: "pause", WorkerID: fmt.Sprintf("w-%03d", i)}
		if i%2 == 1 {
			e.Actor = "dave"
		}
		if err := r.app.History.DB().AppendAudit(context.Background(), e); err != nil {
			t.Fatalf("AppendAudit %d: %v", i, err)
		}
	}

	first := r.page(web.UIPrefix + "/audit")
	rows := auditSubjects(t, first)
	if len(rows) != 100 || rows[0] != "w-104" || rows[99] != "w-005" {
		t.Fatalf("first page lists %d entries from %v to %v, want 100 from w-104 to w-005", len(rows), rows[0], rows[len(rows)-1])
	}
	link := regexp.MustCompile(`href="(` + regexp.QuoteMeta(web.UIPrefix) + `/audit\?[^"]*)"[^>]*>Older entries`).FindStringSubmatch(first)
	if link == nil {
		t.Fatal("first page of 105 entries has no link to older entries")
	}
	older := r.page(strings.ReplaceAll(link[1], "&amp;", "&"))
	if got := auditSubjects(t, older); !slices.Equal(got, []string{"w-004", "w-003", "w-002", "w-001", "w-000"}) {
		t.Errorf("second page lists %v, want w-004 to w-000", got)
	}
	if strings.Contains(older, "Older entries") {
		t.Errorf("the last page links to older entries")
	}

	// The link keeps the filter.
	filtered := r.page(web.UIPrefix + "/audit?kind=command")
	link = regexp.MustCompile(`href="(` + regexp.QuoteMeta(web.UIPrefix) + `/audit\?[^"]*)"[^>]*>Older entries`).FindStringSubmatch(filtered)
	if link == nil {
		t.Fatal("first page of 105 commands has no link to older entries")
	}
	if next := strings.ReplaceAll(link[1], "&amp;", "&"); !strings.Contains(next, "kind=command") {
		t.Errorf("the link to older entries %s drops the filter kind=command", next)
	}

	page := r.page(web.UIPrefix + "/audit?actor=carol")
	if n := len(auditSubjects(t, page)); n != 53 {
		t.Errorf("actor=carol lists %d entries, want 53", n)
	}
	if strings.Contains(page, "Older entries") {
		t.Errorf("53 entries fit one page, yet it links to older entries")
	}
}

// MySQL failing after the connection was made must not break the Audit
// page. It still returns 200 with an HTML page that reports the failure.
func TestAuditPageWhileMySQLFails(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn, follower: true})
	r.heartbeat("w-01", "billing", "running", 1, 0)
	if _, err := db.check.Exec("RENAME TABLE audit_log TO audit_log_away"); err != nil {
		t.Fatalf("rename audit_log: %v", err)
	}
	status, header, body := r.do(http.MethodGet, web.UIPrefix+"/audit", "", map[string]string{"Authorization": basic("operator")})
	if status != http.StatusOK || !strings.HasPrefix(header.Get("Content-Type"), "text/html") {
		t.Errorf("audit page with audit_log missing: status %d, content type %q, want a 200 HTML page; body %s", status, header.Get("Content-Type"), body)
	}
}

var auditCellPattern = regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`)

// auditActions returns the Action column of the Audit page, newest first.
func auditActions(t *testing.T, page string) []string {
	t.Helper()
	body := auditBodyPattern.FindStringSubmatch(page)
	if body == nil {
		t.Fatalf("the audit page has no table body:\n%s", page)
	}
	actions := []string{}
	for _, row := range auditRowPattern.FindAllStringSubmatch(body[1], -1) {
		cells := auditCellPattern.FindAllStringSubmatch(row[1], -1)
		if len(cells) >= 4 {
			actions = append(actions, strings.TrimSpace(cells[3][1]))
		}
	}
	return actions
}

// Every state-changing click of the dashboard is on the Audit page, read
// from MySQL.
func TestAuditPageListsEveryUIClick(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn, follower: true})
	r.heartbeat("w-01", "billing", "running", 1, 0)
	r.heartbeat("w-02", "billing", "running", 1, 0)
	r.heartbeat("w-03", "reports", "running", 1, 0)

	clicks := []struct{ path, form string }{
		{"/workers/w-01/pause", ""},
		{"/workers/w-01/resume", ""},
		{"/workers/w-02/drain", ""},
		{"/pools/billing/scale", "desired_count=3"},
		{"/pools/reports/pause", ""},
		{"/alerts/silences", "matcher=worker&worker=w-01&duration=1h&reason=deploy"},
		{"/settings", "min_jobs=50"},
	}
	var silenceID string
	for _, c := range clicks {
		status, body := r.click("erin", c.path, c.form)
		if status != http.StatusOK {
			t.Fatalf("click %s: status %d, body %s", c.path, status, body)
		}
		if m := regexp.MustCompile(`/alerts/silences/([A-Za-z0-9]+)/lift`).FindStringSubmatch(body); m != nil {
			silenceID = m[1]
		}
	}
	if silenceID == "" {
		t.Fatal("the silence click's fragment has no lift button")
	}
	if status, body := r.click("erin", "/alerts/silences/"+silenceID+"/lift", ""); status != http.StatusOK {
		t.Fatalf("lift silence %s: status %d, body %s", silenceID, status, body)
	}

	r.waitForMySQLAudit(8, 5*time.Second)
	page := r.page(web.UIPrefix + "/audit?actor=erin")
	want := []string{"unsilence", "set min_jobs", "silence", "pause", "scale", "drain", "resume", "pause"}
	if got := auditActions(t, page); !slices.Equal(got, want) {
		t.Errorf("the audit page lists the actions %v for erin, want %v", got, want)
	}
	if n := strings.Count(page, "erin (ui)"); n != len(want) {
		t.Errorf("the audit page names erin (ui) %d times, want %d", n, len(want))
	}
}
