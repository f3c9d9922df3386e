package scheduler_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/scheduler"
	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// lockTTL is short so that a dead leader's lock expires within the test.
const lockTTL = time.Second

// fakeClock is a scheduler clock that moves only when Advance is called.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// replica is one scheduler with a job that counts its runs.
type replica struct {
	*scheduler.Scheduler
	runs  atomic.Int32
	clock *fakeClock
}

func newReplicas(t *testing.T, n int) []*replica {
	t.Helper()
	_, _, client := testenv.Redis(t)
	store := redis.New(client, redis.Options{})
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	var out []*replica
	for i := range n {
		r := &replica{clock: &fakeClock{now: time.Now()}}
		job := scheduler.Job{
			Name:  "count",
			Every: func() time.Duration { return 5 * time.Second },
			Run:   func(context.Context) error { r.runs.Add(1); return nil },
		}
		r.Scheduler = scheduler.New(store, string(rune('a'+i)), []scheduler.Job{job}, scheduler.Options{LockTTL: lockTTL, Now: r.clock.Now}, log)
		out = append(out, r)
	}
	return out
}

// step renews the lock and runs the due jobs, as one tick of Run does.
func (r *replica) step() {
	r.Renew(context.Background())
	r.RunDue(context.Background())
	r.Wait()
}

func leaders(rs []*replica) int {
	n := 0
	for _, r := range rs {
		if r.Leader() {
			n++
		}
	}
	return n
}

func TestOnlyOneLeader(t *testing.T) {
	rs := newReplicas(t, 3)
	for range 5 {
		for _, r := range rs {
			r.clock.Advance(5 * time.Second)
			r.step()
		}
		if n := leaders(rs); n != 1 {
			t.Fatalf("%d leaders, want 1", n)
		}
	}
	for i, r := range rs {
		switch {
		case r.Leader() && r.runs.Load() != 5:
			t.Errorf("leader %d ran its job %d times in 5 steps, want 5", i, r.runs.Load())
		case !r.Leader() && r.runs.Load() != 0:
			t.Errorf("follower %d ran its job %d times", i, r.runs.Load())
		}
	}
}

func TestJobRunsAtItsInterval(t *testing.T) {
	r := newReplicas(t, 1)[0]
	for range 10 { // 10 s in 1 s steps
		r.step()
		r.clock.Advance(time.Second)
	}
	if n := r.runs.Load(); n != 2 {
		t.Errorf("a 5 s job ran %d times in 10 s, want 2", n)
	}
}

func TestDeadLeaderHandedOverAfterTTL(t *testing.T) {
	rs := newReplicas(t, 2)
	first, second := rs[0], rs[1]
	first.step()
	second.step()
	if !first.Leader() || second.Leader() {
		t.Fatalf("leaders: first %v, second %v; want the first only", first.Leader(), second.Leader())
	}

	// The first stops renewing, as a process that died without releasing.
	died := time.Now()
	for !second.Leader() {
		if time.Since(died) > lockTTL+time.Second {
			t.Fatalf("no takeover %s after the leader died, with a %s lock", time.Since(died), lockTTL)
		}
		time.Sleep(50 * time.Millisecond)
		second.step()
	}
	if took := time.Since(died); took < lockTTL-100*time.Millisecond {
		t.Errorf("took over after %s, before the %s lock expired", took, lockTTL)
	}
	if second.runs.Load() == 0 {
		t.Errorf("the new leader ran no job")
	}

	// The old leader wakes up, and its next renewal finds the lock taken.
	runs := first.runs.Load()
	first.clock.Advance(time.Minute)
	first.step()
	if first.Leader() {
		t.Errorf("the old leader still thinks it leads")
	}
	if first.runs.Load() != runs {
		t.Errorf("the old leader ran its job after losing the lock")
	}
}

func TestReleasedLockHandedOverAtOnce(t *testing.T) {
	rs := newReplicas(t, 2)
	first, second := rs[0], rs[1]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { first.Run(ctx); close(done) }()
	deadline := time.Now().Add(2 * time.Second)
	for !first.Leader() {
		if time.Now().After(deadline) {
			t.Fatal("the running scheduler did not take the lock within 2 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	<-done
	if first.Leader() {
		t.Errorf("a stopped scheduler still thinks it leads")
	}
	second.step()
	if !second.Leader() {
		t.Errorf("the lock was not free right after the leader stopped")
	}
}
