// Package history connects the control plane to MySQL: it keeps trying to
// connect in the background, writes one snapshot per period from the
// scheduler's leader, and forwards audit entries without ever making a
// request wait for MySQL.
package history

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/verifier/controlplane/app/mysql"
)

// Metrics count history's successes and failures.
type Metrics struct {
	Snapshots       *prometheus.CounterVec // result: ok, exists, failed
	LastSnapshot    prometheus.Gauge
	AuditWritten    prometheus.Counter
	AuditFailed     prometheus.Counter
	AuditDropped    prometheus.Counter
	ConnectFailures prometheus.Counter
}

// NewMetrics registers history's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Snapshots: f.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_snapshots_total",
			Help: "Snapshot attempts by result: ok, exists (another replica wrote the period), failed.",
		}, []string{"result"}),
		LastSnapshot: f.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_snapshot_last_success_timestamp_seconds",
			Help: "Unix time of the last snapshot this replica wrote.",
		}),
		AuditWritten: f.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_history_audit_written_total",
			Help: "Audit entries written to MySQL.",
		}),
		AuditFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_history_audit_failures_total",
			Help: "Failed writes of audit entries to MySQL (each is retried).",
		}),
		AuditDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_history_audit_dropped_total",
			Help: "Audit entries not written to MySQL because its queue was full; they stay in Redis.",
		}),
		ConnectFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_history_connect_failures_total",
			Help: "Failed attempts to connect to MySQL.",
		}),
	}
}

// Conn is a MySQL connection made in the background: DB returns nil until
// the first successful connection, and the rest of the service works
// without it meanwhile.
type Conn struct {
	dsn string
	log *slog.Logger
	m   *Metrics
	db  atomic.Pointer[mysql.DB]
	// lastSnapshot caches the newest snapshot's time (Unix ms), so pages
	// show it without waiting for MySQL.
	lastSnapshot atomic.Int64
}

// LastSnapshot returns when the newest snapshot was taken, as last read in
// the background, or zero. It never waits for MySQL.
func (c *Conn) LastSnapshot() time.Time {
	ms := c.lastSnapshot.Load()
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func (c *Conn) setLastSnapshot(t time.Time) {
	if ms := t.UnixMilli(); ms > c.lastSnapshot.Load() {
		c.lastSnapshot.Store(ms)
	}
}

// refreshLastSnapshot reads the newest snapshot's time, so replicas that do
// not write snapshots show it too.
func (c *Conn) refreshLastSnapshot(ctx context.Context) {
	db := c.DB()
	if db == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if t, err := db.LastSnapshot(ctx); err == nil {
		c.setLastSnapshot(t)
	}
}

// NewConn returns a connection that Run establishes.
func NewConn(dsn string, m *Metrics, log *slog.Logger) *Conn {
	return &Conn{dsn: dsn, m: m, log: log}
}

// DB returns the connected database, or nil.
func (c *Conn) DB() *mysql.DB { return c.db.Load() }

// Connect tries once to open and migrate the database.
func (c *Conn) Connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := mysql.Open(ctx, c.dsn, c.log)
	if err != nil {
		c.m.ConnectFailures.Inc()
		return err
	}
	c.db.Store(db)
	c.log.Info("history connected to MySQL; migrations applied")
	return nil
}

// Run connects, retrying every retry interval until it succeeds, then keeps
// the cached snapshot time fresh, and closes the database when ctx ends.
func (c *Conn) Run(ctx context.Context, retry time.Duration) {
	lastErr := ""
	for c.DB() == nil {
		if err := c.Connect(ctx); err != nil {
			if err.Error() != lastErr {
				c.log.Error("history cannot connect to MySQL; retrying in the background, history is off meanwhile", "retry", retry, "err", err)
				lastErr = err.Error()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
	ticker := time.NewTicker(10 * time.Second)
	defer ticker.Stop()
	for {
		c.refreshLastSnapshot(ctx)
		select {
		case <-ctx.Done():
			if db := c.DB(); db != nil {
				_ = db.Close()
			}
			return
		case <-ticker.C:
		}
	}
}
