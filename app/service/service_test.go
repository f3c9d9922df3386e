package service_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/verifier/controlplane/app/fleet"
	cpredis "github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/service"
	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const grace = 30 * time.Second

// steppingClock is a clock that moves on by step at each reading, so that
// time passes while a long operation runs.
type steppingClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *steppingClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now
	c.now = c.now.Add(c.step)
	return t
}

func (c *steppingClock) Set(t time.Time, step time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now, c.step = t, step
}

// recordingObserver is an Observer that records each call, for assertions.
type recordingObserver struct {
	mu       sync.Mutex
	accepted int
	rejected []string
	commands []string
}

func (o *recordingObserver) HeartbeatAccepted() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.accepted++
}

func (o *recordingObserver) HeartbeatRejected(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rejected = append(o.rejected, reason)
}

func (o *recordingObserver) CommandIssued(action fleet.Action, source string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.commands = append(o.commands, string(action)+"/"+source)
}

type fixture struct {
	svc      *service.Service
	clock    *steppingClock
	observer *recordingObserver
	rdb      *goredis.Client
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, _, rdb := testenv.Redis(t)
	store := cpredis.New(rdb, cpredis.Options{WorkerTTL: 24 * time.Hour, Timeout: 5 * time.Second})
	clock := &steppingClock{now: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	observer := &recordingObserver{}
	settings := func() fleet.Settings { return fleet.Settings{HeartbeatGrace: grace} }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := service.New(store, settings, service.Options{HeartbeatInterval: 5 * time.Second}, observer, clock.Now, log)
	return &fixture{svc: svc, clock: clock, observer: observer, rdb: rdb}
}

func (f *fixture) heartbeat(t *testing.T, id, pool string) {
	t.Helper()
	hb := &fleet.Heartbeat{ID: id, Pool: pool, Status: fleet.StateRunning}
	if _, err := f.svc.Heartbeat(context.Background(), hb); err != nil {
		t.Fatalf("heartbeat of %s: %v", id, err)
	}
}

func TestPoolCommandPagesPastMaxLimit(t *testing.T) {
	f := newFixture(t)
	const n = service.MaxLimit + 50
	for i := range n {
		f.heartbeat(t, fmt.Sprintf("w-%04d", i), "big")
	}

	res, err := f.svc.PoolCommand(context.Background(), "big", fleet.ActionPause, "ops", fleet.SourceAPI)
	if err != nil {
		t.Fatalf("PoolCommand: %v", err)
	}
	if len(res.Changed) != n || res.Skipped != 0 {
		t.Errorf("changed %d, skipped %d; want %d, 0", len(res.Changed), res.Skipped, n)
	}
	seen := map[string]bool{}
	for _, id := range res.Changed {
		if seen[id] {
			t.Errorf("%s changed twice", id)
		}
		seen[id] = true
	}
}

// A worker that goes stale while a pool command runs must not make the
// command miss a worker that stayed live throughout.
func TestPoolCommandReachesEveryLiveWorker(t *testing.T) {
	f := newFixture(t)
	start := f.clock.Now()
	f.heartbeat(t, "w-0000", "big")
	f.clock.Set(start.Add(20*time.Second), 0)
	const n = service.MaxLimit + 1
	for i := 1; i < n; i++ {
		f.heartbeat(t, fmt.Sprintf("w-%04d", i), "big")
	}

	// w-0000 is 100 ms from stale when the command starts, and each clock
	// reading moves time on by 1 ms, so it goes stale during the first page
	// while every other worker stays live.
	f.clock.Set(start.Add(grace-100*time.Millisecond), time.Millisecond)
	res, err := f.svc.PoolCommand(context.Background(), "big", fleet.ActionPause, "ops", fleet.SourceAPI)
	if err != nil {
		t.Fatalf("PoolCommand: %v", err)
	}
	f.clock.Set(f.clock.Now(), 0)

	changed := map[string]bool{}
	for _, id := range res.Changed {
		changed[id] = true
	}
	for i := 1; i < n; i++ {
		id := fmt.Sprintf("w-%04d", i)
		w, err := f.svc.Worker(context.Background(), id)
		if err != nil {
			t.Fatalf("Worker(%s): %v", id, err)
		}
		if w.Stale {
			t.Fatalf("test setup: %s went stale; only w-0000 should", id)
		}
		if w.Desired != fleet.StatePaused || !changed[id] {
			t.Errorf("%s: desired %q, in changed %v; want paused, true (changed %d, skipped %d)", id, w.Desired, changed[id], len(res.Changed), res.Skipped)
		}
	}
}

func TestHeartbeatUsesServerClock(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	f.clock.Set(now, 0)

	hb := &fleet.Heartbeat{
		ID: "w-01", Pool: "billing", Status: fleet.StateRunning,
		SentAt:     now.Add(-10 * time.Minute),
		ReceivedAt: now.Add(-48 * time.Hour),
	}
	res, err := f.svc.Heartbeat(context.Background(), hb)
	if err != nil {
		t.Fatal(err)
	}
	if !res.SkewWarning {
		t.Error("SkewWarning = false for a clock 10 minutes slow")
	}
	if res.Desired != fleet.StateRunning || res.Interval != 5*time.Second {
		t.Errorf("result = %+v", res)
	}

	w, err := f.svc.Worker(context.Background(), "w-01")
	if err != nil {
		t.Fatal(err)
	}
	if !w.LastHeartbeat.Equal(now) {
		t.Errorf("LastHeartbeat = %v, want the server's clock %v", w.LastHeartbeat, now)
	}
	if w.Stale {
		t.Error("worker is stale right after its heartbeat")
	}
	if w.ClockSkew != -10*time.Minute {
		t.Errorf("ClockSkew = %v, want -10m", w.ClockSkew)
	}
}

func TestRejectedHeartbeatWritesNothing(t *testing.T) {
	f := newFixture(t)
	bad := []struct {
		hb     fleet.Heartbeat
		reason string
	}{
		{fleet.Heartbeat{ID: "", Pool: "billing", Status: fleet.StateRunning}, "id"},
		{fleet.Heartbeat{ID: "w-01", Pool: "a b", Status: fleet.StateRunning}, "pool"},
		{fleet.Heartbeat{ID: "w-01", Pool: "billing", Status: "offline"}, "status"},
		{fleet.Heartbeat{ID: "w-01", Pool: "billing", Status: fleet.StateRunning, PID: -1}, "pid"},
		{fleet.Heartbeat{ID: "w-01", Pool: "billing", Status: fleet.StateRunning, Metrics: map[string]float64{"jobs_failed": -1}}, "metrics.jobs_failed"},
	}
	for _, tt := range bad {
		hb := tt.hb
		if _, err := f.svc.Heartbeat(context.Background(), &hb); fleet.ErrorCode(err) != fleet.EINVALID {
			t.Errorf("heartbeat rejected with %v, want an invalid-input error", err)
		}
	}

	if n := f.rdb.DBSize(context.Background()).Val(); n != 0 {
		t.Errorf("rejected heartbeats left %d keys", n)
	}
	if f.observer.accepted != 0 {
		t.Errorf("accepted = %d, want 0", f.observer.accepted)
	}
	if len(f.observer.rejected) != len(bad) {
		t.Fatalf("rejected = %v, want %d entries", f.observer.rejected, len(bad))
	}
	for i, tt := range bad {
		if f.observer.rejected[i] != tt.reason {
			t.Errorf("rejection %d reason = %q, want %q", i, f.observer.rejected[i], tt.reason)
		}
	}
}

func TestCommandAndScaleAreAudited(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.heartbeat(t, "w-01", "billing")

	if _, err := f.svc.Command(ctx, "w-01", fleet.ActionDrain, "alice", fleet.SourceUI, "shrink the pool"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Scale(ctx, "billing", 3, "api", fleet.SourceAPI); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Scale(ctx, "billing", 2, "api", fleet.SourceAPI); err != nil {
		t.Fatal(err)
	}

	entries, err := f.svc.Audit(ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("audit has %d entries, want 3: %+v", len(entries), entries)
	}
	scaleAgain, scaleFirst, drain := entries[0], entries[1], entries[2]
	if drain.Kind != fleet.AuditCommand || drain.Actor != "alice" || drain.Source != fleet.SourceUI ||
		drain.Before != "running" || drain.After != "draining" || drain.Reason != "shrink the pool" || drain.Pool != "billing" {
		t.Errorf("drain entry = %+v", drain)
	}
	if scaleFirst.Before != "" || scaleFirst.After != "3" {
		t.Errorf("first scale entry before/after = %q/%q, want \"\"/3", scaleFirst.Before, scaleFirst.After)
	}
	if scaleAgain.Before != "3" || scaleAgain.After != "2" {
		t.Errorf("second scale entry before/after = %q/%q, want 3/2", scaleAgain.Before, scaleAgain.After)
	}
	if len(f.observer.commands) != 1 || f.observer.commands[0] != "drain/ui" {
		t.Errorf("observed commands = %v, want [drain/ui]", f.observer.commands)
	}

	workerEntries, err := f.svc.Audit(ctx, "w-01", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(workerEntries) != 1 {
		t.Errorf("w-01 audit has %d entries, want 1", len(workerEntries))
	}
}
