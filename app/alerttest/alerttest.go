// Package alerttest builds alert engines for tests: on a real Redis, with a
// fake clock shared by the service (which stamps heartbeats) and the engine,
// and a recording notification channel whose deliveries a test can wait for.
// It also provides a Slack webhook server, an SMTP server and a TCP proxy
// that tests start on 127.0.0.1.
package alerttest

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/alert"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/service"
)

// Clock is a fake clock that moves only when Advance is called. It starts at
// the wall clock's current second, so that code comparing it with context
// deadlines (notify.Retrier) stays consistent.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at the current second.
func NewClock() *Clock { return &Clock{now: time.Now().UTC().Truncate(time.Second)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Settings returns the settings the harness starts with: alerts on, a 5 s
// check interval, a 30 s grace, a 15 min cooldown, a 10 % error-rate
// threshold over at least 20 jobs, automatic actions off.
func Settings() fleet.Settings {
	return fleet.Settings{
		AlertsEnabled: true, CheckInterval: 5 * time.Second, HeartbeatGrace: 30 * time.Second,
		Cooldown: 15 * time.Minute, ErrorRateThreshold: 10, MinJobs: 20, SnapshotInterval: time.Minute,
	}
}

// HeartbeatInterval is the heartbeat interval the harness's service and
// engines use.
const HeartbeatInterval = 5 * time.Second

// Harness is one Redis database with a service on it, a fake clock, runtime
// settings that a test may change, and a recorder of every notification the
// harness's engines send.
type Harness struct {
	t        testing.TB
	Clock    *Clock
	Store    *redis.Store
	Service  *service.Service
	Sent     *Recorder
	Log      *slog.Logger
	settings atomic.Pointer[fleet.Settings]
}

// New returns a harness on client. The client is closed by the caller.
func New(t testing.TB, client goredis.UniversalClient) *Harness {
	h := &Harness{
		t:     t,
		Clock: NewClock(),
		Store: redis.New(client, redis.Options{}),
		Sent:  NewRecorder(),
		Log:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	s := Settings()
	h.settings.Store(&s)
	h.Service = service.New(h.Store, h.Settings, service.Options{HeartbeatInterval: HeartbeatInterval}, nopObserver{}, h.Clock.Now, h.Log)
	return h
}

// Settings returns the settings in force.
func (h *Harness) Settings() fleet.Settings { return *h.settings.Load() }

// SetSettings changes the settings in force for every engine of h.
func (h *Harness) SetSettings(change func(*fleet.Settings)) {
	s := h.Settings()
	change(&s)
	h.settings.Store(&s)
}

// Heartbeat records one heartbeat at the clock's time and fails the test
// when the service rejects it.
func (h *Harness) Heartbeat(id, pool string, status fleet.State, metrics map[string]float64) fleet.State {
	h.t.Helper()
	return h.Send(fleet.Heartbeat{ID: id, Pool: pool, Status: status, Metrics: metrics})
}

// Send records hb at the clock's time and fails the test when the service
// rejects it.
func (h *Harness) Send(hb fleet.Heartbeat) fleet.State {
	h.t.Helper()
	res, err := h.Service.Heartbeat(context.Background(), &hb)
	if err != nil {
		h.t.Fatalf("heartbeat of %s: %v", hb.ID, err)
	}
	return res.Desired
}

// Replica is one engine of the harness: a replica of the control plane, or
// the same replica after a restart. Its notifications go to h.Sent.
type Replica struct {
	*alert.Engine
	h        *Harness
	dispatch *alert.Dispatcher
}

// Options returns the engine options the harness uses by default: the
// heartbeat interval and a 24 h worker retention.
func Options() alert.Options {
	return alert.Options{HeartbeatInterval: HeartbeatInterval, WorkerRetention: 24 * time.Hour}
}

// Replica starts a new engine on the harness's store, clock and settings.
func (h *Harness) Replica(opts alert.Options) *Replica {
	return h.ReplicaOn(h.Store, opts)
}

// ReplicaOn starts a new engine on store, which may wrap h.Store to inject
// faults, with the harness's service, clock and settings.
func (h *Harness) ReplicaOn(store alert.Store, opts alert.Options) *Replica {
	return h.replica(store, h.Clock.Now, opts)
}

// SkewedReplica starts a new engine whose clock runs skew ahead of the
// harness's clock (behind when negative), as on a host whose clock is off.
// The service, which stamps heartbeats, keeps the harness's clock.
func (h *Harness) SkewedReplica(skew time.Duration, opts alert.Options) *Replica {
	return h.replica(h.Store, func() time.Time { return h.Clock.Now().Add(skew) }, opts)
}

func (h *Harness) replica(store alert.Store, now func() time.Time, opts alert.Options) *Replica {
	d := alert.NewDispatcher([]alert.Sender{h.Sent}, h.Log)
	h.t.Cleanup(func() { d.Close(context.Background()) })
	return &Replica{
		Engine:   alert.NewEngine(store, h.Service, h.Settings, d, opts, now, h.Log),
		h:        h,
		dispatch: d,
	}
}

// Check runs one alert check and waits until the recorder has every
// notification the check handed to the dispatcher. It returns the check's
// error.
func (r *Replica) Check() error {
	err := r.Engine.Check(context.Background())
	r.Sync()
	return err
}

// MustCheck runs Check and fails the test on an error.
func (r *Replica) MustCheck() {
	r.h.t.Helper()
	if err := r.Check(); err != nil {
		r.h.t.Fatalf("alert check: %v", err)
	}
}

// Sync waits until every notification enqueued so far reached the
// recorder.
func (r *Replica) Sync() {
	r.h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.dispatch.Wait(ctx); err != nil {
		r.h.t.Fatalf("the dispatcher did not deliver within 5 s")
	}
}

type nopObserver struct{}

func (nopObserver) HeartbeatAccepted()                 {}
func (nopObserver) HeartbeatRejected(string)           {}
func (nopObserver) CommandIssued(fleet.Action, string) {}
