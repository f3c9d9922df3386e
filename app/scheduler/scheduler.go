// Package scheduler runs the periodic jobs (alert checks, automatic
// actions, housekeeping, snapshots) on exactly one replica at a time: the
// holder of a Redis lock with an expiry, which it renews while it runs. When
// the holder dies, another replica takes over once the lock expires and its
// next attempt comes: within the expiry plus a third of it (20 s with the
// default 15 s). A holder that shuts down releases the lock at once.
package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Lock is the leader lock (app/redis).
type Lock interface {
	AcquireOrRenewLock(ctx context.Context, holder string, ttl time.Duration) (bool, error)
	ReleaseLock(ctx context.Context, holder string) error
}

// Job is one periodic task.
type Job struct {
	Name string
	// Every returns the current interval; settings may change it at run time.
	Every func() time.Duration
	Run   func(ctx context.Context) error
}

// Options tune the scheduler; zero fields take the defaults.
type Options struct {
	// LockTTL is the lock's expiry: how long a dead leader blocks the
	// others. Default 15 s; the lock is renewed every third of it.
	LockTTL time.Duration
	Now     func() time.Time
	// OnStoreDown and OnStoreBack are called when this replica's lock
	// renewal first fails because Redis is unreachable, and when it
	// reaches Redis again, whether or not it leads.
	OnStoreDown func()
	OnStoreBack func(ctx context.Context)
}

// Scheduler runs jobs while it holds the lock.
type Scheduler struct {
	lock   Lock
	holder string
	jobs   []Job
	opts   Options
	log    *slog.Logger

	leader    atomic.Bool
	storeDown bool
	next      map[string]time.Time
	running   map[string]*atomic.Bool // job -> a run is in progress

	mu       sync.Mutex
	failures map[string]string // job -> last error text, to log once per change
	wg       sync.WaitGroup
}

// New returns a scheduler; holder identifies this replica in the lock.
func New(lock Lock, holder string, jobs []Job, opts Options, log *slog.Logger) *Scheduler {
	if opts.LockTTL <= 0 {
		opts.LockTTL = 15 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	running := make(map[string]*atomic.Bool, len(jobs))
	for _, j := range jobs {
		running[j.Name] = new(atomic.Bool)
	}
	return &Scheduler{lock: lock, holder: holder, jobs: jobs, opts: opts, log: log, next: map[string]time.Time{}, running: running, failures: map[string]string{}}
}

// Leader reports whether this replica held the lock at its last step.
func (s *Scheduler) Leader() bool { return s.leader.Load() }

// Run steps every second until ctx ends, then releases the lock.
func (s *Scheduler) Run(ctx context.Context) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	lastRenew := time.Time{}
	for {
		now := s.opts.Now()
		if now.Sub(lastRenew) >= s.opts.LockTTL/3 {
			s.renew(ctx)
			lastRenew = now
		}
		s.RunDue(ctx)
		select {
		case <-ctx.Done():
			s.wg.Wait()
			s.release()
			return
		case <-ticker.C:
		}
	}
}

// renew takes or renews the lock. When Redis cannot be reached, a leader
// stays leader: no other replica can take the lock meanwhile, and the
// leader's alert check is what reports the outage.
func (s *Scheduler) renew(ctx context.Context) {
	ok, err := s.lock.AcquireOrRenewLock(ctx, s.holder, s.opts.LockTTL)
	if err != nil {
		if fleet.ErrorCode(err) != fleet.EUNAVAILABLE {
			s.leader.Store(false)
		} else if !s.storeDown {
			s.storeDown = true
			if s.opts.OnStoreDown != nil {
				s.opts.OnStoreDown()
			}
		}
		s.logFailure("lock", err)
		return
	}
	s.logFailure("lock", nil)
	if s.storeDown {
		s.storeDown = false
		if s.opts.OnStoreBack != nil {
			s.opts.OnStoreBack(ctx)
		}
	}
	if ok != s.leader.Load() {
		if ok {
			s.log.Info("this replica now runs the periodic jobs", "holder", s.holder)
		} else {
			s.log.Info("another replica runs the periodic jobs", "holder", s.holder)
		}
	}
	s.leader.Store(ok)
}

// RunDue starts every job whose time has come, if this replica leads. Each
// job runs in its own goroutine, so a slow one (a snapshot to a slow MySQL)
// never delays another (the alert check); a job still running when it is
// due again is skipped. Tests call RunDue after moving the clock, then Wait.
func (s *Scheduler) RunDue(ctx context.Context) {
	if !s.leader.Load() {
		return
	}
	now := s.opts.Now()
	for _, j := range s.jobs {
		if next, ok := s.next[j.Name]; ok && now.Before(next) {
			continue
		}
		s.next[j.Name] = now.Add(j.Every())
		running := s.running[j.Name]
		if !running.CompareAndSwap(false, true) {
			s.log.Debug("periodic job still running; skipping this run", "job", j.Name)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer running.Store(false)
			s.logFailure(j.Name, j.Run(ctx))
		}()
	}
}

// Wait blocks until the jobs started so far have finished.
func (s *Scheduler) Wait() { s.wg.Wait() }

// Renew is Run's lock step, for tests.
func (s *Scheduler) Renew(ctx context.Context) { s.renew(ctx) }

func (s *Scheduler) release() {
	if !s.leader.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.lock.ReleaseLock(ctx, s.holder); err != nil {
		s.log.Warn("scheduler lock not released; another replica takes over when it expires", "ttl", s.opts.LockTTL, "err", err)
		return
	}
	s.leader.Store(false)
	s.log.Info("scheduler lock released", "holder", s.holder)
}

// logFailure logs a job's error once per change of its text, and its
// recovery once.
func (s *Scheduler) logFailure(job string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.failures[job]
	switch {
	case err == nil && prev != "":
		s.log.Info("periodic job recovered", "job", job)
		delete(s.failures, job)
	case err != nil && err.Error() != prev:
		s.log.Warn("periodic job failed; it runs again at its next interval", "job", job, "err", err)
		s.failures[job] = err.Error()
	}
}
