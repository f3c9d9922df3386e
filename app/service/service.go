// Package service is the one application layer behind both faces of the
// control plane: the JSON API and the HTMX dashboard call the same methods,
// so no business rule is written twice.
package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Store is the live state the service reads and writes (app/redis).
type Store interface {
	Heartbeat(ctx context.Context, hb *fleet.Heartbeat) (fleet.State, error)
	Worker(ctx context.Context, id string) (*fleet.Worker, error)
	Workers(ctx context.Context, ids []string) ([]*fleet.Worker, error)
	Index(ctx context.Context) ([]fleet.PoolEntry, error)
	PoolState(ctx context.Context) (known []string, desired map[string]int, err error)
	Scale(ctx context.Context, pool string, n int) (previous int, err error)
	SetDesired(ctx context.Context, id string, cmd fleet.Command) error
	AppendAudit(ctx context.Context, e fleet.AuditEntry) error
	ListAudit(ctx context.Context, workerID string, limit int) ([]fleet.AuditEntry, error)
	Stats(ctx context.Context, now time.Time) (heartbeatsLastMinute int64, rates fleet.FleetRates, err error)
}

// AuditSink receives every audit entry besides the store, e.g. MySQL history.
type AuditSink interface {
	AppendAudit(ctx context.Context, e fleet.AuditEntry) error
}

// Observer receives accepted heartbeats, rejections and commands, for
// metrics. Its methods must not block.
type Observer interface {
	HeartbeatAccepted()
	HeartbeatRejected(reason string)
	CommandIssued(action fleet.Action, source string)
}

// Settings returns the settings in force; the Settings page can change them
// at run time.
type Settings func() fleet.Settings

// Options configure a Service.
type Options struct {
	HeartbeatInterval time.Duration
	MaxDesiredCount   int
}

// Service implements the control plane's use cases.
type Service struct {
	store    Store
	settings Settings
	opts     Options
	observer Observer
	sinks    []AuditSink
	now      func() time.Time
	log      *slog.Logger
}

// New returns a Service. now is the clock; tests pass a fake one.
func New(store Store, settings Settings, opts Options, observer Observer, now func() time.Time, log *slog.Logger) *Service {
	if opts.MaxDesiredCount <= 0 {
		opts.MaxDesiredCount = fleet.DefaultMaxDesiredCount
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 5 * time.Second
	}
	return &Service{store: store, settings: settings, opts: opts, observer: observer, now: now, log: log}
}

// AddAuditSink sends every later audit entry to sink as well.
func (s *Service) AddAuditSink(sink AuditSink) { s.sinks = append(s.sinks, sink) }

// Log returns the service's logger, for callers that report a failure the
// service does not see.
func (s *Service) Log() *slog.Logger { return s.log }

// Now returns the service's clock reading.
func (s *Service) Now() time.Time { return s.now() }

// Grace returns the heartbeat grace period in force.
func (s *Service) Grace() time.Duration { return s.settings().HeartbeatGrace }

// HeartbeatResult is what a worker gets back.
type HeartbeatResult struct {
	Desired  fleet.State
	Interval time.Duration
	// SkewWarning is set when the worker's clock is far from the server's.
	SkewWarning bool
}

// Heartbeat validates and records one heartbeat and returns the worker's
// desired state. The server's clock stamps it; a rejected heartbeat writes
// nothing.
func (s *Service) Heartbeat(ctx context.Context, hb *fleet.Heartbeat) (HeartbeatResult, error) {
	hb.ReceivedAt = s.now().UTC()
	if err := hb.Validate(); err != nil {
		s.observer.HeartbeatRejected(fleet.ErrorField(err))
		return HeartbeatResult{}, err
	}

	desired, err := s.store.Heartbeat(ctx, hb)
	if err != nil {
		s.observer.HeartbeatRejected("unavailable")
		return HeartbeatResult{}, err
	}
	s.observer.HeartbeatAccepted()

	skew := !hb.SentAt.IsZero() && (hb.SentAt.Sub(hb.ReceivedAt) > fleet.MaxClockSkew || hb.ReceivedAt.Sub(hb.SentAt) > fleet.MaxClockSkew)
	return HeartbeatResult{Desired: desired, Interval: s.opts.HeartbeatInterval, SkewWarning: skew}, nil
}

// Worker returns one worker with its derived fields, or ENOTFOUND.
func (s *Service) Worker(ctx context.Context, id string) (*fleet.Worker, error) {
	if err := fleet.ValidateName("id", id); err != nil {
		return nil, err
	}
	w, err := s.store.Worker(ctx, id)
	if err != nil {
		return nil, err
	}
	w.Derive(s.now(), s.Grace())
	return w, nil
}

// Audit returns up to limit audit entries, newest first, of one worker or,
// with workerID empty, of the fleet.
func (s *Service) Audit(ctx context.Context, workerID string, limit int) ([]fleet.AuditEntry, error) {
	return s.store.ListAudit(ctx, workerID, limit)
}

// audit records e in the store and every sink. A failure is logged, not
// returned: the change it describes has already been made.
func (s *Service) audit(ctx context.Context, e fleet.AuditEntry) {
	if err := s.store.AppendAudit(ctx, e); err != nil {
		s.log.Warn("audit entry not stored", "kind", e.Kind, "action", e.Action, "worker", e.WorkerID, "pool", e.Pool, "err", err)
	}
	for _, sink := range s.sinks {
		if err := sink.AppendAudit(ctx, e); err != nil {
			s.log.Warn("audit entry not written to history", "kind", e.Kind, "action", e.Action, "err", err)
		}
	}
}

// Record adds an audit entry for a change made outside the service, such as
// a settings change or a silence.
func (s *Service) Record(ctx context.Context, e fleet.AuditEntry) {
	if e.At.IsZero() {
		e.At = s.now().UTC()
	}
	s.audit(ctx, e)
}

// RejectHeartbeat counts a heartbeat that the web layer could not decode.
func (s *Service) RejectHeartbeat(field string) {
	if field == "" {
		field = "body"
	}
	s.observer.HeartbeatRejected(field)
}
