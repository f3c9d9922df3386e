package history

import (
	"context"
	"log/slog"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// auditQueue bounds the audit entries waiting for MySQL.
const auditQueue = 10_000

// AuditSink forwards audit entries to MySQL from a queue, so a click never
// waits for MySQL. Entries that cannot be queued are counted and stay in
// the Redis audit list.
type AuditSink struct {
	conn  *Conn
	queue chan fleet.AuditEntry
	m     *Metrics
	log   *slog.Logger
}

// NewAuditSink returns a sink; Run drains it.
func NewAuditSink(conn *Conn, m *Metrics, log *slog.Logger) *AuditSink {
	return &AuditSink{conn: conn, queue: make(chan fleet.AuditEntry, auditQueue), m: m, log: log}
}

// AppendAudit queues e and returns at once.
func (a *AuditSink) AppendAudit(_ context.Context, e fleet.AuditEntry) error {
	select {
	case a.queue <- e:
	default:
		a.m.AuditDropped.Inc()
	}
	return nil
}

// Run writes queued entries until ctx ends, retrying each with backoff
// while MySQL is unreachable.
func (a *AuditSink) Run(ctx context.Context) {
	lastErr := ""
	for {
		var e fleet.AuditEntry
		select {
		case <-ctx.Done():
			return
		case e = <-a.queue:
		}
		for backoff := time.Second; ; backoff = min(2*backoff, time.Minute) {
			db := a.conn.DB()
			var err error
			if db != nil {
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err = db.AppendAudit(wctx, e)
				cancel()
				if err == nil {
					a.m.AuditWritten.Inc()
					if lastErr != "" {
						a.log.Info("audit entries reach MySQL again")
						lastErr = ""
					}
					break
				}
				a.m.AuditFailed.Inc()
				if err.Error() != lastErr {
					a.log.Warn("audit entry not written to MySQL; retrying", "err", err)
					lastErr = err.Error()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}
