package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
)

// auditRecord is the JSON form of an audit entry in the audit lists.
type auditRecord struct {
	AtMS     int64  `json:"at_ms"`
	Actor    string `json:"actor"`
	Source   string `json:"source"`
	Kind     string `json:"kind"`
	Action   string `json:"action"`
	WorkerID string `json:"worker_id,omitempty"`
	Pool     string `json:"pool,omitempty"`
	Before   string `json:"before,omitempty"`
	After    string `json:"after,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// AppendAudit adds e to the capped fleet-wide audit list and, for a worker
// entry, to that worker's list, and announces it.
func (s *Store) AppendAudit(ctx context.Context, e fleet.AuditEntry) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	b, err := json.Marshal(auditRecord{
		AtMS: e.At.UnixMilli(), Actor: e.Actor, Source: e.Source, Kind: e.Kind, Action: e.Action,
		WorkerID: e.WorkerID, Pool: e.Pool, Before: e.Before, After: e.After, Reason: e.Reason,
	})
	if err != nil {
		return fmt.Errorf("encode audit entry: %w", err)
	}
	_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.LPush(ctx, auditKey, b)
		p.LTrim(ctx, auditKey, 0, s.opts.AuditCap-1)
		if e.WorkerID != "" {
			p.LPush(ctx, workerAuditKey(e.WorkerID), b)
			p.LTrim(ctx, workerAuditKey(e.WorkerID), 0, s.opts.WorkerAuditCap-1)
			p.PExpire(ctx, workerAuditKey(e.WorkerID), s.opts.WorkerTTL)
		}
		p.Publish(ctx, s.channel, "audit")
		return nil
	})
	if err != nil {
		return wrap("append audit entry", err)
	}
	return nil
}

// ListAudit returns up to limit entries, newest first: the worker's own when
// workerID is set, else the fleet's.
func (s *Store) ListAudit(ctx context.Context, workerID string, limit int) ([]fleet.AuditEntry, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	key := auditKey
	if workerID != "" {
		key = workerAuditKey(workerID)
	}
	raw, err := s.rdb.LRange(ctx, key, 0, int64(limit)-1).Result()
	if err != nil {
		return nil, wrap("read audit entries", err)
	}
	out := make([]fleet.AuditEntry, 0, len(raw))
	for _, r := range raw {
		var a auditRecord
		if err := json.Unmarshal([]byte(r), &a); err != nil {
			continue // written by another version; skip rather than fail the page
		}
		out = append(out, fleet.AuditEntry{
			At: time.UnixMilli(a.AtMS).UTC(), Actor: a.Actor, Source: a.Source, Kind: a.Kind, Action: a.Action,
			WorkerID: a.WorkerID, Pool: a.Pool, Before: a.Before, After: a.After, Reason: a.Reason,
		})
	}
	return out, nil
}
