package web_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/verifier/controlplane/app/cli"
	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/mysql"
	cpredis "github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/testenv"
	"github.com/verifier/controlplane/app/web"
)

// The history tests run whole replicas (cli.Start) on the Redis of testenv
// and, where history is on, a private database cp_test_<random> on the
// server named by MYSQL_TEST_DSN, dropped when the test ends.

const historyToken = "history-test-token-0123456789abcdef"

// historyLogs is a log sink that goroutines may share.
type historyLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *historyLogs) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *historyLogs) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// historyDatabase is a private database on the MYSQL_TEST_DSN server.
type historyDatabase struct {
	name string
	dsn  string
	cfg  *gomysql.Config
	// check reads and seeds the database as UTC.
	check *sql.DB
}

// newHistoryDatabase creates an empty database and drops it when the test
// ends. It skips, or fails with CONTROLPLANE_REQUIRE_SERVICES=1, without
// MYSQL_TEST_DSN.
func newHistoryDatabase(t *testing.T) *historyDatabase {
	t.Helper()
	base := os.Getenv("MYSQL_TEST_DSN")
	if base == "" {
		testenv.SkipOrFail(t, "MYSQL_TEST_DSN is not set; set it to a server where the tests may create databases, such as root@tcp(127.0.0.1:3306)/test")
	}
	server, err := sql.Open("mysql", base)
	if err != nil {
		t.Fatalf("open MYSQL_TEST_DSN: %v", err)
	}
	t.Cleanup(func() { server.Close() })

	suffix := make([]byte, 6)
	rand.Read(suffix)
	name := "cp_test_" + hex.EncodeToString(suffix)
	if _, err := server.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := server.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})

	cfg, err := gomysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("parse MYSQL_TEST_DSN: %v", err)
	}
	cfg.DBName = name
	checkCfg := cfg.Clone()
	checkCfg.ParseTime = true
	checkCfg.Loc = time.UTC
	checkCfg.Params = map[string]string{"time_zone": "'+00:00'"}
	check, err := sql.Open("mysql", checkCfg.FormatDSN())
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { check.Close() })
	return &historyDatabase{name: name, dsn: cfg.FormatDSN(), cfg: cfg, check: check}
}

// dsnWith returns the database's DSN with params added.
func (d *historyDatabase) dsnWith(params map[string]string) string {
	cfg := d.cfg.Clone()
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	for k, v := range params {
		cfg.Params[k] = v
	}
	return cfg.FormatDSN()
}

// historyReplica is one running control plane.
type historyReplica struct {
	t    *testing.T
	app  *cli.App
	base string
	logs *historyLogs
	http *http.Client
}

// replicaOptions configure startHistoryReplica.
type replicaOptions struct {
	// mysqlDSN turns history on.
	mysqlDSN string
	// env adds or overrides environment variables.
	env map[string]string
	// follower has another holder take the scheduler lock first, so the
	// replica runs no periodic job (and takes no snapshot) for a minute.
	follower bool
}

// startHistoryReplica starts a replica with a 5 s snapshot interval, a 1 s
// heartbeat interval and a 3 s grace period.
func startHistoryReplica(t *testing.T, opts replicaOptions) *historyReplica {
	t.Helper()
	addr, db, rdb := testenv.Redis(t)

	if opts.follower {
		store := cpredis.New(rdb, cpredis.Options{})
		held, err := store.AcquireOrRenewLock(context.Background(), "another-replica", time.Minute)
		if err != nil || !held {
			t.Fatalf("take the scheduler lock for another replica: held %v, err %v", held, err)
		}
	}
	vars := map[string]string{
		"HTTP_ADDR":                     "127.0.0.1:0",
		"CONTROL_PLANE_TOKEN":           historyToken,
		"REDIS_ADDR":                    addr,
		"REDIS_DB":                      strconv.Itoa(db),
		"MYSQL_DSN":                     opts.mysqlDSN,
		"SNAPSHOT_INTERVAL_SECONDS":     "5",
		"HEARTBEAT_INTERVAL_SECONDS":    "1",
		"ALERT_HEARTBEAT_GRACE_SECONDS": "3",
	}
	for k, v := range opts.env {
		vars[k] = v
	}

	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}

	logs := &historyLogs{}
	app, err := cli.Start(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("cli.Start: %v", err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		app.Shutdown(context.Background())
	})
	return &historyReplica{t: t, app: app, base: app.URL(), logs: logs, http: client}
}

// bearer and basic return Authorization header values.
func bearer() string { return "Bearer " + historyToken }

func basic(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+historyToken))
}

// do sends one request with the given headers and returns the status, the
// headers and the body.
func (r *historyReplica) do(method, path, body string, header map[string]string) (int, http.Header, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.base+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatalf("build %s %s: %v", method, path, err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := r.http.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		r.t.Fatalf("read %s %s: %v", method, path, err)
	}
	return res.StatusCode, res.Header, string(b)
}

// get sends a GET with the bearer token.
func (r *historyReplica) get(path string) (int, string) {
	r.t.Helper()
	status, _, body := r.do(http.MethodGet, path, "", map[string]string{"Authorization": bearer()})
	return status, body
}

// page sends a GET as a browser does, with Basic auth, and expects 200.
func (r *historyReplica) page(path string) string {
	r.t.Helper()
	status, _, body := r.do(http.MethodGet, path, "", map[string]string{"Authorization": basic("operator")})
	if status != http.StatusOK {
		r.t.Fatalf("GET %s: status %d, body %s", path, status, body)
	}
	return body
}

// heartbeat posts a heartbeat through the API and expects 200.
func (r *historyReplica) heartbeat(id, pool, status string, processed, failed float64) {
	r.t.Helper()
	body := fmt.Sprintf(`{"id":%q,"pool":%q,"status":%q,"metrics":{"jobs_processed":%v,"jobs_failed":%v,"memory_mb":128}}`,
		id, pool, status, processed, failed)
	code, _, out := r.do(http.MethodPost, "/api/workers/heartbeat", body,
		map[string]string{"Authorization": bearer(), "Content-Type": "application/json"})
	if code != http.StatusOK {
		r.t.Fatalf("heartbeat of %s: status %d, body %s", id, code, out)
	}
}

// click posts a command as the dashboard's buttons do: Basic auth as user,
// the CSRF token and HX-Request. form is the url-encoded body.
func (r *historyReplica) click(user, path, form string) (int, string) {
	r.t.Helper()
	status, _, body := r.do(http.MethodPost, web.UIPrefix+path, form, map[string]string{
		"Authorization": basic(user),
		"X-CSRF-Token":  web.CSRFToken(historyToken),
		"HX-Request":    "true",
		"Content-Type":  "application/x-www-form-urlencoded",
	})
	return status, body
}

// metric returns the value of one sample line of /metrics, such as
// `controlplane_snapshots_total{result="ok"}`, and whether it is there.
func (r *historyReplica) metric(series string) (float64, bool) {
	r.t.Helper()
	status, body := r.get("/metrics")
	if status != http.StatusOK {
		r.t.Fatalf("GET /metrics: status %d", status)
	}
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				r.t.Fatalf("metric %s: parse %q: %v", series, v, err)
			}
			return f, true
		}
	}
	return 0, false
}

// chartReply is the JSON of a chart endpoint.
type chartReply struct {
	Labels   []time.Time `json:"labels"`
	Datasets []struct {
		Label string    `json:"label"`
		Data  []float64 `json:"data"`
	} `json:"datasets"`
}

type historyError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

// chart GETs a chart endpoint, expects 200 and decodes it.
func (r *historyReplica) chart(path string) chartReply {
	r.t.Helper()
	status, body := r.get(web.UIPrefix + path)
	if status != http.StatusOK {
		r.t.Fatalf("GET %s: status %d, body %s", path, status, body)
	}
	var c chartReply
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		r.t.Fatalf("GET %s: decode %s: %v", path, body, err)
	}
	return c
}

func datasetLabels(c chartReply) []string {
	labels := make([]string, len(c.Datasets))
	for i, d := range c.Datasets {
		labels[i] = d.Label
	}
	return labels
}

func TestChartsEmptyHistory(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn, follower: true})

	cases := []struct {
		path string
		want string
	}{
		{"/charts/pools?range=1h&chart=status", `{"labels":[],"datasets":[{"label":"running","data":[]},{"label":"paused","data":[]},{"label":"draining","data":[]},{"label":"stopped","data":[]},{"label":"stale","data":[]}]}`},
		{"/charts/pools?range=24h&chart=jobs&pool=billing", `{"labels":[],"datasets":[{"label":"jobs_per_minute","data":[]}]}`},
		{"/charts/pools?range=7d&chart=errors", `{"labels":[],"datasets":[{"label":"error_rate","data":[]}]}`},
		{"/charts/workers/w-01?range=1h&chart=jobs", `{"labels":[],"datasets":[{"label":"processed","data":[]},{"label":"failed","data":[]}]}`},
		{"/charts/workers/w-01?range=7d&chart=memory", `{"labels":[],"datasets":[{"label":"memory_mb","data":[]}]}`},
	}
	for _, c := range cases {
		status, body := r.get(web.UIPrefix + c.path)
		if status != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200; body %s", c.path, status, body)
			continue
		}
		if body != c.want {
			t.Errorf("GET %s:\n got %s\nwant %s", c.path, body, c.want)
		}
	}
}

func TestChartsRejectBadParameters(t *testing.T) {
	db := newHistoryDatabase(t)
	r := startHistoryReplica(t, replicaOptions{mysqlDSN: db.dsn})

	cases := []struct {
		path  string
		field string
	}{
		{"/charts/pools?range=2h&chart=status", "range"},
		{"/charts/pools?range=1d", "range"},
		{"/charts/pools?range=1h&chart=memory", "chart"},
		{"/charts/pools?range=1h&chart=status&pool=" + url.QueryEscape("bad pool"), "pool"},
		{"/charts/pools?range=1h&chart=status&pool=" + url.QueryEscape("<script>"), "pool"},
		{"/charts/pools?range=1h&chart=status&pool=" + strings.Repeat("p", 129), "pool"},
		{"/charts/workers/w-01?range=30d&chart=jobs", "range"},
		{"/charts/workers/w-01?range=1h&chart=status", "chart"},
		{"/charts/workers/" + strings.Repeat("w", 129) + "?range=1h&chart=jobs", "id"},
		{"/charts/workers/" + url.PathEscape("w 01") + "?range=1h&chart=jobs", "id"},
	}
	for _, c := range cases {
		status, body := r.get(web.UIPrefix + c.path)
		if status != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400; body %s", c.path, status, body)
			continue
		}
		var e historyError
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Errorf("GET %s: decode %s: %v", c.path, body, err)
			continue
		}
		if e.Error.Field != c.field {
			t.Errorf("GET %s: field %q, want %q; body %s", c.path, e.Error.Field, c.field, body)
		}
		if !strings.Contains(e.Error.Message, c.field) {
			t.Errorf("GET %s: message %q does not name %s", c.path, e.Error.Message, c.field)
		}
	}
}

// chartPools are the seeded pools. Pool p has p+1 running workers and does
// 60*(p+1) jobs per minute with 3 failures per snapshot, and beta has one
// paused worker.
var chartPools = []string{"alpha", "beta", "gamma"}

func chartPoolRow(p int) fleet.PoolSnapshot {
	r := fleet.PoolSnapshot{Pool: chartPools[p], Running: p + 1, Processed: float64(60 * (p + 1)), Failed: 3}
	if p == 1 {
		r.Paused = 1
	}
	r.ErrorRate, _ = fleet.ErrorRate(r.Processed, r.Failed)
	return r
}

// chartSnapshot is snapshot i of the seeded history, taken one second into
// its period.
func chartSnapshot(period time.Time, i int) fleet.Snapshot {
	s := fleet.Snapshot{At: period.Add(time.Second), Period: period}
	for p := range chartPools {
		s.Pools = append(s.Pools, chartPoolRow(p))
	}
	s.Workers = []fleet.WorkerSnapshot{{ID: "w-01", Pool: "alpha", Status: fleet.StateRunning, Desired: fleet.StateRunning,
		Processed: float64(1000 + 60*i), Failed: float64(3 * i), MemoryMB: float64(100 + i%10)}}
	return s
}

// seedChartHistory writes n snapshots one minute apart, the last at end.
// The older ones go in multi-row INSERTs of up to 500 rows, 2,000
// snapshots per transaction, because 10,000 WriteSnapshot calls of one
// transaction each take tens of seconds even on a local MariaDB. The
// newest hour goes through WriteSnapshot.
func seedChartHistory(t *testing.T, db *historyDatabase, history *mysql.DB, end time.Time, n int) {
	t.Helper()
	ctx := context.Background()
	const recent = 60
	periodOf := func(i int) time.Time { return end.Add(-time.Duration(n-1-i) * time.Minute) }

	tables := []struct {
		name    string
		columns string
		rows    func(i int) [][]any
	}{
		{"snapshot_periods", "period, taken_at, elapsed_ms, pools, workers, running, paused, draining, stopped, stale, processed, failed",
			func(i int) [][]any {
				s := chartSnapshot(periodOf(i), i)
				var total fleet.PoolSnapshot
				for _, p := range s.Pools {
					total.Running += p.Running
					total.Paused += p.Paused
					total.Processed += p.Processed
					total.Failed += p.Failed
				}
				var elapsed sql.NullInt64
				if i > 0 {
					elapsed = sql.NullInt64{Int64: 60000, Valid: true}
				}
				return [][]any{{s.Period, s.At, elapsed, len(s.Pools), len(s.Workers),
					total.Running, total.Paused, 0, 0, 0, total.Processed, total.Failed}}
			}},
		{"pool_snapshots", "period, taken_at, pool, desired_count, running, paused, draining, stopped, stale, processed, failed, error_rate",
			func(i int) [][]any {
				s := chartSnapshot(periodOf(i), i)
				var rows [][]any
				for _, p := range s.Pools {
					rows = append(rows, []any{s.Period, s.At, p.Pool, nil, p.Running, p.Paused, 0, 0, 0, p.Processed, p.Failed, p.ErrorRate})
				}
				return rows
			}},
		{"worker_snapshots", "period, worker_id, pool, status, desired_state, stale, heartbeat_age_ms, processed, failed, memory_mb",
			func(i int) [][]any {
				s := chartSnapshot(periodOf(i), i)
				w := s.Workers[0]
				return [][]any{{s.Period, w.ID, w.Pool, string(w.Status), string(w.Desired), false, 0, w.Processed, w.Failed, w.MemoryMB}}
			}},
	}

	const perTx, perInsert = 2000, 500
	for first := 0; first < n-recent; first += perTx {
		last := min(first+perTx, n-recent)
		tx, err := db.check.BeginTx(ctx, nil)
		if err != nil {
			t.Fatalf("begin seed: %v", err)
		}
		for _, table := range tables {
			var rows [][]any
			for i := first; i < last; i++ {
				rows = append(rows, table.rows(i)...)
			}
			for start := 0; start < len(rows); start += perInsert {
				batch := rows[start:min(start+perInsert, len(rows))]
				placeholders := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(batch[0])), ", ") + ")"
				query := "INSERT INTO " + table.name + " (" + table.columns + ") VALUES " +
					strings.TrimSuffix(strings.Repeat(placeholders+", ", len(batch)), ", ")
				var args []any
				for _, row := range batch {
					args = append(args, row...)
				}
				if _, err := tx.ExecContext(ctx, query, args...); err != nil {
					t.Fatalf("seed %s: %v", table.name, err)
				}
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatalf("commit seed: %v", err)
		}
	}
	for i := n - recent; i < n; i++ {
		if err := history.WriteSnapshot(ctx, chartSnapshot(periodOf(i), i)); err != nil {
			t.Fatalf("WriteSnapshot %d at %v: %v", i, periodOf(i), err)
		}
	}
}

// Over seven days and an hour of one-minute snapshots of three pools, every
// range returns at most 300 points per series, oldest first, with the
// values that were written.
func TestChartsDownsampleSevenDays(t *testing.T) {
	db := newHistoryDatabase(t)
	migrated, err := mysql.Open(context.Background(), db.dsn, nil)
	if err != nil {
		t.Fatalf("mysql.Open: %v", err)
	}
	defer migrated.Close()

	// The snapshots end at the current minute, so the replica's own first
	// snapshot, of the current day at a one-day interval, finds its period
	// taken and writes nothing.
	now := time.Now().UTC()
	end := now.Truncate(time.Minute)
	if end.Add(time.Second).After(now) {
		end = end.Add(-time.Minute)
	}
	const periods = 7*24*60 + 60
	start := time.Now()
	seedChartHistory(t, db, migrated, end, periods)
	t.Logf("seeded %d snapshots in %v", periods, time.Since(start))

	// The replica's DSN sets the session time zone to +08:00, which must
	// shift no label.
	r := startHistoryReplica(t, replicaOptions{
		mysqlDSN: db.dsnWith(map[string]string{"time_zone": "'+08:00'"}),
		env:      map[string]string{"SNAPSHOT_INTERVAL_SECONDS": "86400"},
	})

	// At one-minute buckets, the labels are the seeded periods.
	hour := r.chart("/charts/pools?range=1h&chart=status&pool=alpha")
	if n := len(hour.Labels); n == 0 || !hour.Labels[n-1].Equal(end) || !hour.Labels[0].Equal(end.Add(-time.Duration(n-1)*time.Minute)) {
		t.Errorf("1h labels run from %v to %v, want one a minute up to the newest period %v", hour.Labels[0], hour.Labels[len(hour.Labels)-1], end)
	}

	minPoints := map[string]int{"1h": 59, "24h": 250, "7d": 250}
	for _, rng := range []string{"1h", "24h", "7d"} {
		for _, pool := range []string{"", "alpha", "beta", "gamma"} {
			wantRunning, wantPaused, wantJobs, wantRate := 6.0, 1.0, 360.0, 100*9.0/360
			for p, name := range chartPools {
				if name == pool {
					row := chartPoolRow(p)
					wantRunning, wantPaused, wantJobs, wantRate = float64(row.Running), float64(row.Paused), row.Processed, row.ErrorRate
				}
			}
			want := map[string]map[string]float64{
				"status": {"running": wantRunning, "paused": wantPaused, "draining": 0, "stopped": 0, "stale": 0},
				"jobs":   {"jobs_per_minute": wantJobs},
				"errors": {"error_rate": wantRate},
			}
			for _, chart := range []string{"status", "jobs", "errors"} {
				path := "/charts/pools?range=" + rng + "&chart=" + chart
				if pool != "" {
					path += "&pool=" + pool
				}
				c := r.chart(path)
				checkChartShape(t, path, c, minPoints[rng], time.Minute)
				for _, d := range c.Datasets {
					w, ok := want[chart][d.Label]
					if !ok {
						t.Errorf("%s: unexpected dataset %q", path, d.Label)
						continue
					}
					for i, v := range d.Data {
						if math.Abs(v-w) > 1e-9 {
							t.Errorf("%s: %s[%d] at %v = %v, want %v", path, d.Label, i, c.Labels[i], v, w)
							break
						}
					}
				}
				if len(c.Datasets) != len(want[chart]) {
					t.Errorf("%s: datasets %v, want %d", path, datasetLabels(c), len(want[chart]))
				}
			}
		}

		path := "/charts/workers/w-01?range=" + rng + "&chart=jobs"
		c := r.chart(path)
		checkChartShape(t, path, c, minPoints[rng], time.Minute)
		if got := datasetLabels(c); strings.Join(got, ",") != "processed,failed" {
			t.Fatalf("%s: datasets %v, want processed and failed", path, got)
		}
		processed := c.Datasets[0].Data
		for i := 1; i < len(processed); i++ {
			if processed[i] <= processed[i-1] {
				t.Errorf("%s: processed[%d] = %v after %v; the maximum of a rising counter must rise", path, i, processed[i], processed[i-1])
				break
			}
		}
		if n := len(processed); n > 0 && processed[n-1] != float64(1000+60*(periods-1)) {
			t.Errorf("%s: last processed = %v, want %v from the newest snapshot", path, processed[n-1], 1000+60*(periods-1))
		}
		path = "/charts/workers/w-01?range=" + rng + "&chart=memory"
		c = r.chart(path)
		checkChartShape(t, path, c, minPoints[rng], time.Minute)
		for i, v := range c.Datasets[0].Data {
			if v < 100 || v > 109 {
				t.Errorf("%s: memory_mb[%d] = %v, want an average of values from 100 to 109", path, i, v)
				break
			}
		}
	}

	// The replica's own snapshot found its period taken.
	if got, _ := r.metric(`controlplane_snapshots_total{result="failed"}`); got != 0 {
		t.Errorf("snapshots failed = %v, want 0", got)
	}
}

// checkChartShape checks that a chart has between minPoints and 300 labels,
// oldest first, a whole number of steps apart, each dataset one value per
// label.
func checkChartShape(t *testing.T, path string, c chartReply, minPoints int, step time.Duration) {
	t.Helper()
	if n := len(c.Labels); n < minPoints || n > 300 {
		t.Errorf("%s: %d points, want %d to 300", path, n, minPoints)
	}
	for i := 1; i < len(c.Labels); i++ {
		gap := c.Labels[i].Sub(c.Labels[i-1])
		if gap <= 0 || gap%step != 0 {
			t.Errorf("%s: label %d (%v) is %v after the previous one, want a positive multiple of %v", path, i, c.Labels[i], gap, step)
			break
		}
	}
	if len(c.Datasets) == 0 {
		t.Errorf("%s: no datasets", path)
	}
	for _, d := range c.Datasets {
		if len(d.Data) != len(c.Labels) {
			t.Errorf("%s: dataset %s has %d values for %d labels", path, d.Label, len(d.Data), len(c.Labels))
		}
	}
}

func TestChartsOffWithoutMySQL(t *testing.T) {
	r := startHistoryReplica(t, replicaOptions{})
	r.heartbeat("w-01", "billing", "running", 1, 0)

	for _, path := range []string{"/overview", "/workers/w-01"} {
		body := r.page(web.UIPrefix + path)
		if !strings.Contains(body, "History is off") || !strings.Contains(body, "MYSQL_DSN") {
			t.Errorf("GET %s does not say that history is off and how to turn it on (MYSQL_DSN)", path)
		}
		if strings.Contains(body, "data-chart-url") {
			t.Errorf("GET %s draws charts without history", path)
		}
	}
	if body := r.page(web.UIPrefix + "/overview"); strings.Contains(body, "Last history snapshot") {
		t.Errorf("the overview shows a last snapshot time without history")
	}

	for _, path := range []string{"/charts/pools?range=1h&chart=status", "/charts/workers/w-01?range=1h&chart=jobs"} {
		status, body := r.get(web.UIPrefix + path)
		if status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404; body %s", path, status, body)
			continue
		}
		var e historyError
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Errorf("GET %s: decode %s: %v", path, body, err)
			continue
		}
		if !strings.Contains(e.Error.Message, "MYSQL_DSN") {
			t.Errorf("GET %s: message %q does not name MYSQL_DSN", path, e.Error.Message)
		}
	}
}

// A MySQL that cannot be reached at start leaves heartbeats and pages
// working. Charts return 503, and the failure counts against MySQL, not
// Redis.
func TestChartsWhileMySQLUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	r := startHistoryReplica(t, replicaOptions{mysqlDSN: "root@tcp(" + closedAddr + ")/cp_test_unreachable"})
	r.heartbeat("w-01", "billing", "running", 1, 0)
	r.page(web.UIPrefix + "/overview")
	if body := r.page(web.UIPrefix + "/audit"); !strings.Contains(body, "kept in Redis") {
		t.Errorf("the audit page does not fall back to the Redis list while MySQL is unreachable")
	}

	status, header, body := r.do(http.MethodGet, web.UIPrefix+"/charts/pools?range=1h&chart=status", "", map[string]string{"Authorization": bearer()})
	if status != http.StatusServiceUnavailable {
		t.Fatalf("chart while MySQL is unreachable: status %d, want 503; body %s", status, body)
	}
	if header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	if got, _ := r.metric("controlplane_history_connect_failures_total"); got < 1 {
		t.Errorf("history connect failures = %v, want at least 1", got)
	}
	if got, ok := r.metric(`controlplane_dependency_failures_total{dependency="redis"}`); ok && got > 0 {
		t.Errorf("a chart that MySQL could not serve counted %v Redis failures; Redis answered every call", got)
	}
	if regexp.MustCompile(`level=WARN msg="state store unavailable".*charts`).MatchString(r.logs.String()) {
		t.Errorf("the log blames the state store (Redis) for MySQL being unreachable:\n%s", r.logs.String())
	}
}
