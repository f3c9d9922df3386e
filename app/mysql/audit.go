package mysql

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/verifier/controlplane/app/fleet"
)

// Page sizes of ListAudit.
const (
	DefaultAuditLimit = 50
	MaxAuditLimit     = 500
)

// AuditRecord is a stored audit entry with its id. Ids grow with insertion
// order, so a larger id is a newer entry.
type AuditRecord struct {
	ID int64
	fleet.AuditEntry
}

// AuditFilter selects audit entries. Empty strings and zero times match
// everything.
type AuditFilter struct {
	WorkerID string
	Pool     string
	Actor    string
	Kind     string
	// Since is inclusive, Until exclusive.
	Since time.Time
	Until time.Time
	// Limit is the page size: DefaultAuditLimit when 0 or less, at most
	// MaxAuditLimit.
	Limit int
	// BeforeID, when above 0, returns only entries older than that id: pass
	// the ID of the last record of a page to get the next page.
	BeforeID int64
}

// Column sizes of audit_log, in bytes. AppendAudit cuts longer values.
const (
	auditActorBytes  = 255
	auditSourceBytes = 16
	auditKindBytes   = 32
	auditActionBytes = 64
	auditNameBytes   = 128
	auditTextBytes   = 65535
)

// AppendAudit stores e. A zero e.At is replaced by the current time.
//
// NOTE: a value longer than its column (actor 255 bytes, before, after and
// reason 64 KiB, ...) is cut at a UTF-8 boundary rather than failing the
// write, so that the entry is kept. Invalid UTF-8 is replaced by U+FFFD.
func (d *DB) AppendAudit(ctx context.Context, e fleet.AuditEntry) error {
	at := e.At
	if at.IsZero() {
		at = d.now()
	}

	_, err := d.db.ExecContext(ctx, `INSERT INTO audit_log
		(at, actor, source, kind, action, worker_id, pool, before_value, after_value, reason)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		toUTC(at),
		clip(e.Actor, auditActorBytes),
		clip(e.Source, auditSourceBytes),
		clip(e.Kind, auditKindBytes),
		clip(e.Action, auditActionBytes),
		clip(e.WorkerID, auditNameBytes),
		clip(e.Pool, auditNameBytes),
		clip(e.Before, auditTextBytes),
		clip(e.After, auditTextBytes),
		clip(e.Reason, auditTextBytes))
	if err != nil {
		return fmt.Errorf("insert audit_log (kind %q, action %q): %w", e.Kind, e.Action, err)
	}
	return nil
}

// ListAudit returns the entries that match f, newest first, at most f.Limit
// of them (see AuditFilter for the defaults).
func (d *DB) ListAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, error) {
	var where []string
	var args []any
	for _, c := range []struct{ column, value string }{
		{"worker_id", f.WorkerID},
		{"pool", f.Pool},
		{"actor", f.Actor},
		{"kind", f.Kind},
	} {
		if c.value != "" {
			where = append(where, c.column+" = ?")
			args = append(args, c.value)
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "at >= ?")
		args = append(args, toUTC(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, "at < ?")
		args = append(args, toUTC(f.Until))
	}
	if f.BeforeID > 0 {
		where = append(where, "id < ?")
		args = append(args, f.BeforeID)
	}

	limit := f.Limit
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	limit = min(limit, MaxAuditLimit)

	query := "SELECT id, at, actor, source, kind, action, worker_id, pool, before_value, after_value, reason FROM audit_log"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)

	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit_log: %w", err)
	}
	defer rows.Close()

	records := []AuditRecord{}
	for rows.Next() {
		var r AuditRecord
		err := rows.Scan(&r.ID, &r.At, &r.Actor, &r.Source, &r.Kind, &r.Action,
			&r.WorkerID, &r.Pool, &r.Before, &r.After, &r.Reason)
		if err != nil {
			return nil, fmt.Errorf("list audit_log: scan: %w", err)
		}
		records = append(records, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit_log: %w", err)
	}
	return records, nil
}

// clip returns s as valid UTF-8 of at most n bytes, cut at a rune boundary.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
