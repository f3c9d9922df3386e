package history_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/history"
	cpredis "github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/service"
	"github.com/verifier/controlplane/app/testenv"
)

// The tests use the Redis of testenv and the MySQL or MariaDB server named
// by MYSQL_TEST_DSN. Each test creates its own database cp_test_<random>
// and drops it when it ends.

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	mysqlHint = "MYSQL_TEST_DSN is not set; set it to a server where the tests may create databases, such as root@tcp(127.0.0.1:3306)/test"
	grace     = 30 * time.Second
)

// t0 is the start of a one-minute snapshot period.
var t0 = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

// testClock is a settable clock shared by the service and the snapshotters.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// logBuffer is a log sink that goroutines may share.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// nopObserver is a service.Observer that records nothing.
type nopObserver struct{}

func (nopObserver) HeartbeatAccepted()                 {}
func (nopObserver) HeartbeatRejected(string)           {}
func (nopObserver) CommandIssued(fleet.Action, string) {}

// testDatabase is a private database on the MYSQL_TEST_DSN server.
type testDatabase struct {
	name string
	// dsn opens the database with the params given to newTestDatabase.
	dsn string
	// server is a pool on MYSQL_TEST_DSN itself, for CREATE, DROP and KILL.
	server *sql.DB
	// check reads the database as UTC, for assertions.
	check *sql.DB
}

// newTestDatabase creates an empty database cp_test_<random> and drops it
// when the test ends. params are added to its DSN.
func newTestDatabase(t *testing.T, params map[string]string) *testDatabase {
	t.Helper()
	base := os.Getenv("MYSQL_TEST_DSN")
	if base == "" {
		testenv.SkipOrFail(t, mysqlHint)
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
	for k, v := range params {
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params[k] = v
	}
	checkCfg.ParseTime = true
	checkCfg.Loc = time.UTC
	checkCfg.Params = map[string]string{"time_zone": "'+00:00'"}
	check, err := sql.Open("mysql", checkCfg.FormatDSN())
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { check.Close() })
	return &testDatabase{name: name, dsn: cfg.FormatDSN(), server: server, check: check}
}

// count returns the number of rows of table that match where.
func (d *testDatabase) count(t *testing.T, table, where string, args ...any) int {
	t.Helper()
	query := "SELECT COUNT(*) FROM " + table
	if where != "" {
		query += " WHERE " + where
	}
	var n int
	if err := d.check.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// fixture is one replica's history on a private database and the Redis of
// testenv, with a settable clock.
type fixture struct {
	t       *testing.T
	clock   *testClock
	rdb     *goredis.Client
	svc     *service.Service
	db      *testDatabase
	metrics *history.Metrics
	conn    *history.Conn
	logs    *logBuffer
	log     *slog.Logger
}

// newFixture connects a Conn to a new private database whose DSN has
// params added.
func newFixture(t *testing.T, params map[string]string) *fixture {
	t.Helper()
	db := newTestDatabase(t, params)
	_, _, rdb := testenv.Redis(t)
	f := &fixture{t: t, clock: &testClock{now: t0}, rdb: rdb, db: db, logs: &logBuffer{}}
	f.log = newLogger(f.logs)
	f.svc = f.newService()
	f.metrics = history.NewMetrics(prometheus.NewRegistry())
	f.conn = history.NewConn(db.dsn, f.metrics, f.log)
	if err := f.conn.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() {
		if d := f.conn.DB(); d != nil {
			d.Close()
		}
	})
	return f
}

// newService returns a service on the fixture's Redis and clock, as another
// replica would build it.
func (f *fixture) newService() *service.Service {
	store := cpredis.New(f.rdb, cpredis.Options{WorkerTTL: 24 * time.Hour, Timeout: 5 * time.Second})
	settings := func() fleet.Settings { return fleet.Settings{HeartbeatGrace: grace} }
	return service.New(store, settings, service.Options{HeartbeatInterval: 5 * time.Second}, nopObserver{}, f.clock.Now, f.log)
}

// snapshotter returns a Snapshotter with a one-minute interval on conn,
// logging to log.
func (f *fixture) snapshotter(conn *history.Conn, m *history.Metrics, retention time.Duration, log *slog.Logger) *history.Snapshotter {
	interval := func() time.Duration { return time.Minute }
	return history.NewSnapshotter(conn, f.svc, interval, retention, f.clock.Now, m, log)
}

// replica returns a second replica's Conn and metrics on the same database.
func (f *fixture) replica() (*history.Conn, *history.Metrics) {
	f.t.Helper()
	m := history.NewMetrics(prometheus.NewRegistry())
	conn := history.NewConn(f.db.dsn, m, f.log)
	if err := conn.Connect(context.Background()); err != nil {
		f.t.Fatalf("Connect of the second replica: %v", err)
	}
	f.t.Cleanup(func() { conn.DB().Close() })
	return conn, m
}

// heartbeat records a heartbeat at the clock's current time.
func (f *fixture) heartbeat(id, pool string, status fleet.State, processed, failed, memoryMB float64) {
	f.t.Helper()
	hb := &fleet.Heartbeat{ID: id, Pool: pool, Status: status, Metrics: map[string]float64{
		fleet.MetricProcessed: processed, fleet.MetricFailed: failed, fleet.MetricMemoryMB: memoryMB,
	}}
	if _, err := f.svc.Heartbeat(context.Background(), hb); err != nil {
		f.t.Fatalf("heartbeat of %s: %v", id, err)
	}
}

// snapshots returns controlplane_snapshots_total{result} of m.
func snapshots(m *history.Metrics, result string) float64 {
	return testutil.ToFloat64(m.Snapshots.WithLabelValues(result))
}

// periods returns the periods in snapshot_periods, oldest first.
func (d *testDatabase) periods(t *testing.T) []time.Time {
	t.Helper()
	rows, err := d.check.Query("SELECT period FROM snapshot_periods ORDER BY period")
	if err != nil {
		t.Fatalf("read snapshot_periods: %v", err)
	}
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var p time.Time
		if err := rows.Scan(&p); err != nil {
			t.Fatalf("scan snapshot_periods: %v", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read snapshot_periods: %v", err)
	}
	return out
}

// countLines returns how many log lines contain every one of parts.
func countLines(logs string, parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(logs, "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}
