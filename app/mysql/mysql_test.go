package mysql

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The tests run against a real MySQL or MariaDB named by MYSQL_TEST_DSN.
// Each test creates its own database cp_test_<random> and drops it after.

const enableHint = "MYSQL_TEST_DSN=root@tcp(127.0.0.1:3306)/test"

// baseDSN returns MYSQL_TEST_DSN. When it is unset, the test is skipped, or
// fails when CONTROLPLANE_REQUIRE_SERVICES=1.
func baseDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv("MYSQL_TEST_DSN")
	if dsn != "" {
		return dsn
	}
	if os.Getenv("CONTROLPLANE_REQUIRE_SERVICES") == "1" {
		tb.Fatalf("MYSQL_TEST_DSN is not set, and CONTROLPLANE_REQUIRE_SERVICES=1 requires the MariaDB tests; set %s", enableHint)
	}
	tb.Skipf("MariaDB tests skipped; set %s to enable them", enableHint)
	return ""
}

// openAdmin opens a plain driver pool on MYSQL_TEST_DSN, without any of
// Open's settings.
func openAdmin(tb testing.TB) *sql.DB {
	tb.Helper()
	admin, err := sql.Open("mysql", baseDSN(tb))
	if err != nil {
		tb.Fatalf("open MYSQL_TEST_DSN: %v", err)
	}
	tb.Cleanup(func() { admin.Close() })
	return admin
}

// newTestDatabase creates an empty database cp_test_<random>, drops it when
// the test ends, and returns a DSN for it with params added.
func newTestDatabase(tb testing.TB, params map[string]string) string {
	tb.Helper()
	admin := openAdmin(tb)

	suffix := make([]byte, 6)
	rand.Read(suffix)
	name := "cp_test_" + hex.EncodeToString(suffix)
	if _, err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4"); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})

	cfg, err := mysql.ParseDSN(baseDSN(tb))
	if err != nil {
		tb.Fatalf("parse MYSQL_TEST_DSN: %v", err)
	}
	cfg.DBName = name
	for k, v := range params {
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params[k] = v
	}
	return cfg.FormatDSN()
}

// openDSN opens dsn with Open and closes it when the test ends.
func openDSN(tb testing.TB, dsn string, logger *slog.Logger) *DB {
	tb.Helper()
	d, err := Open(context.Background(), dsn, logger)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// openTestDB opens a fresh, migrated database.
func openTestDB(tb testing.TB) *DB {
	tb.Helper()
	return openDSN(tb, newTestDatabase(tb, nil), nil)
}

// lockedBuffer is a log sink that goroutines may share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestOpenRejectsInvalidDSN(t *testing.T) {
	for _, dsn := range []string{
		"",
		"root@tcp(127.0.0.1:3306",
		"root@tcp(127.0.0.1:3306)",
		"root@tcp(127.0.0.1:3306)/",
		"root@tcp(127.0.0.1:3306)/test?parseTime=maybe",
	} {
		_, err := Open(context.Background(), dsn, nil)
		if err == nil {
			t.Errorf("Open(%q) returned no error", dsn)
			continue
		}
		if !strings.Contains(err.Error(), "MYSQL_DSN") {
			t.Errorf("Open(%q) error %q does not name MYSQL_DSN", dsn, err)
		}
		if !strings.Contains(err.Error(), "user:pass@tcp(host:3306)/db") {
			t.Errorf("Open(%q) error %q does not show the accepted form", dsn, err)
		}
	}
}

func TestConnLifetime(t *testing.T) {
	for _, c := range []struct{ waitTimeout, want time.Duration }{
		{28800 * time.Second, 3 * time.Minute},
		{360 * time.Second, 3 * time.Minute},
		{120 * time.Second, 60 * time.Second},
		{10 * time.Second, 5 * time.Second},
		{1 * time.Second, time.Second},
		{0, time.Second},
	} {
		if got := connLifetime(c.waitTimeout); got != c.want {
			t.Errorf("connLifetime(%v) = %v, want %v", c.waitTimeout, got, c.want)
		}
	}
}

func TestOpenForcesUTCSession(t *testing.T) {
	dsn := newTestDatabase(t, map[string]string{"time_zone": "'+08:00'", "loc": "Local"})
	var logs lockedBuffer
	d := openDSN(t, dsn, slog.New(slog.NewTextHandler(&logs, nil)))

	var zone string
	if err := d.db.QueryRow("SELECT @@session.time_zone").Scan(&zone); err != nil {
		t.Fatalf("read session time_zone: %v", err)
	}
	if zone != "+00:00" {
		t.Errorf("session time_zone = %q, want +00:00", zone)
	}

	var now time.Time
	if err := d.db.QueryRow("SELECT NOW(3)").Scan(&now); err != nil {
		t.Fatalf("read NOW(): %v", err)
	}
	if now.Location() != time.UTC {
		t.Errorf("scanned time is in %v, want UTC", now.Location())
	}
	if skew := time.Since(now); skew < -time.Minute || skew > time.Minute {
		t.Errorf("server NOW() read back %v away from the local clock; the session or driver zone is not UTC", skew)
	}

	if !strings.Contains(logs.String(), "time_zone") {
		t.Errorf("Open did not log that it replaced the DSN's time_zone; logs:\n%s", logs.String())
	}
}

func TestPing(t *testing.T) {
	d := openTestDB(t)
	if err := d.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	d.Close()
	if err := d.Ping(context.Background()); err == nil {
		t.Errorf("Ping after Close returned no error")
	}
}

// schemaVersion returns the version and dirty flag golang-migrate recorded.
func schemaVersion(t *testing.T, d *DB) (int, bool) {
	t.Helper()
	var version int
	var dirty bool
	if err := d.db.QueryRow("SELECT version, dirty FROM schema_migrations").Scan(&version, &dirty); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return version, dirty
}

func tableNames(t *testing.T, d *DB) []string {
	t.Helper()
	rows, err := d.db.Query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name")
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatalf("scan table name: %v", err)
		}
		names = append(names, name)
	}
	return names
}

const wantTables = "audit_log pool_snapshots schema_migrations snapshot_periods worker_snapshots"

func TestMigrateEmptyDatabaseThenNoOp(t *testing.T) {
	dsn := newTestDatabase(t, nil)

	first := openDSN(t, dsn, nil)
	if got := strings.Join(tableNames(t, first), " "); got != wantTables {
		t.Errorf("tables after first Open = %q, want %q", got, wantTables)
	}
	version, dirty := schemaVersion(t, first)
	if version != 1 || dirty {
		t.Errorf("schema after first Open = version %d dirty %v, want version 1 clean", version, dirty)
	}

	if err := first.AppendAudit(context.Background(), auditEntry("w-01", "billing", "alice", "command")); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}

	second := openDSN(t, dsn, nil)
	version, dirty = schemaVersion(t, second)
	if version != 1 || dirty {
		t.Errorf("schema after second Open = version %d dirty %v, want version 1 clean", version, dirty)
	}
	records, err := second.ListAudit(context.Background(), AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(records) != 1 {
		t.Errorf("second Open lost data: %d audit records, want 1", len(records))
	}
}

func TestMigrateConcurrently(t *testing.T) {
	dsn := newTestDatabase(t, nil)

	const openers = 4
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, openers)
	dbs := make([]*DB, openers)
	for i := range openers {
		wg.Go(func() {
			<-start
			dbs[i], errs[i] = Open(context.Background(), dsn, nil)
		})
	}
	close(start)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Open %d: %v", i, err)
			continue
		}
		t.Cleanup(func() { dbs[i].Close() })
	}
	if t.Failed() {
		return
	}
	if got := strings.Join(tableNames(t, dbs[0]), " "); got != wantTables {
		t.Errorf("tables = %q, want %q", got, wantTables)
	}
	version, dirty := schemaVersion(t, dbs[0])
	if version != 1 || dirty {
		t.Errorf("schema = version %d dirty %v, want version 1 clean", version, dirty)
	}
}

// The server closes a connection that idles past wait_timeout. The pool must
// retire its connections before that, so no write meets a closed one.
func TestWriteAfterServerIdleTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 25 s for the server to close idle connections")
	}
	dsn := newTestDatabase(t, nil)
	admin := openAdmin(t)

	var oldTimeout int
	if err := admin.QueryRow("SELECT @@global.wait_timeout").Scan(&oldTimeout); err != nil {
		t.Fatalf("read global wait_timeout: %v", err)
	}
	// The admin pool keeps one connection, opened before the change, so
	// restoring does not depend on a new connection.
	admin.SetMaxIdleConns(1)
	admin.SetConnMaxIdleTime(0)
	admin.SetConnMaxLifetime(0)
	if _, err := admin.Exec("SET GLOBAL wait_timeout = 10"); err != nil {
		t.Fatalf("set global wait_timeout: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(fmt.Sprintf("SET GLOBAL wait_timeout = %d", oldTimeout)); err != nil {
			t.Errorf("restore global wait_timeout to %d: %v", oldTimeout, err)
		}
	})

	var logs lockedBuffer
	d := openDSN(t, dsn, slog.New(slog.NewTextHandler(&logs, nil)))
	var sessionTimeout int
	if err := d.db.QueryRow("SELECT @@session.wait_timeout").Scan(&sessionTimeout); err != nil {
		t.Fatalf("read session wait_timeout: %v", err)
	}
	if sessionTimeout != 10 {
		t.Fatalf("session wait_timeout = %d, want 10 from the global setting", sessionTimeout)
	}

	ctx := context.Background()
	period := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		if i > 0 {
			time.Sleep(12 * time.Second)
		}
		p := period.Add(time.Duration(i) * time.Minute)
		if err := d.WriteSnapshot(ctx, knownSnapshot(p, p.Add(time.Second))); err != nil {
			t.Fatalf("WriteSnapshot %d after %d idle gaps: %v", i, i, err)
		}
		if err := d.AppendAudit(ctx, auditEntry("w-01", "billing", "alice", "command")); err != nil {
			t.Fatalf("AppendAudit %d after %d idle gaps: %v", i, i, err)
		}
	}

	for _, bad := range []string{"invalid connection", "bad idle connection", "broken pipe"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("log mentions %q; the pool reused a connection the server had closed:\n%s", bad, logs.String())
		}
	}
}
