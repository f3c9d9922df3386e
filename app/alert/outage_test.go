package alert_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/alerttest"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/testenv"
)

var outageWorkers = []string{"w-01", "w-02", "w-03"}

// outageClient is a client configured as the server's (app/cli): bounded
// calls and no automatic retries, so an outage fails fast.
func outageClient(t *testing.T, addr string, db int) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{
		Addr: addr, DB: db, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, PoolTimeout: 500 * time.Millisecond,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// heartbeatAll sends one heartbeat of every worker and returns how many the
// service accepted. During an outage it rejects them as unavailable.
func heartbeatAll(t *testing.T, h *alerttest.Harness) int {
	t.Helper()
	accepted := 0
	for _, id := range outageWorkers {
		_, err := h.Service.Heartbeat(context.Background(), &fleet.Heartbeat{ID: id, Pool: "billing", Status: fleet.StateRunning})
		switch {
		case err == nil:
			accepted++
		case fleet.ErrorCode(err) != fleet.EUNAVAILABLE:
			t.Errorf("heartbeat of %s during the outage: %v, want an unavailable error", id, err)
		}
	}
	return accepted
}

// outageSteps moves the clock one heartbeat interval per step, heartbeats
// every worker and runs a check on r. It returns how many checks failed and
// the last error.
func outageSteps(t *testing.T, h *alerttest.Harness, r *alerttest.Replica, steps int) (failed int, last error) {
	t.Helper()
	for range steps {
		h.Clock.Advance(alerttest.HeartbeatInterval)
		heartbeatAll(t, h)
		if err := r.Check(); err != nil {
			failed, last = failed+1, err
		}
	}
	return failed, last
}

func assertNoWorkerBlamed(t *testing.T, h *alerttest.Harness) {
	t.Helper()
	if firing, _ := h.Sent.Rule(fleet.RuleHeartbeatMissing); firing != 0 {
		t.Errorf("%d heartbeat_missing notifications for our own outage; sent %q", firing, h.Sent.Titles())
	}
}

// TestRedisRestartBlamesNoWorker stops Redis for 90 s of fake time while
// three workers keep trying to heartbeat, then starts it again empty.
func TestRedisRestartBlamesNoWorker(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	h := alerttest.New(t, outageClient(t, srv.Addr, 0))
	r := h.Replica(alerttest.Options())
	if failed, err := outageSteps(t, h, r, 3); failed != 0 {
		t.Fatalf("%d checks failed before the outage: %v", failed, err)
	}

	srv.Stop()
	if failed, _ := outageSteps(t, h, r, 18); failed != 18 {
		t.Errorf("%d of 18 checks failed while Redis was down, want all", failed)
	}
	assertNoWorkerBlamed(t, h)
	if firing, _ := h.Sent.Rule(fleet.RuleStoreUnavailable); firing != 1 {
		t.Errorf("90 s outage: %d store_unavailable notifications, want 1", firing)
	}

	srv.Start()
	// After failed dials go-redis dials again only from a background probe,
	// about once a second, and fails some calls until then. So real time
	// passes here, as between the scheduler's ticks and the workers'
	// retries after Retry-After.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.Clock.Advance(200 * time.Millisecond)
		if heartbeatAll(t, h) == len(outageWorkers) && r.Check() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeats or checks still fail 5 s after Redis came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if failed, err := outageSteps(t, h, r, 10); failed != 0 {
		t.Errorf("%d checks failed after Redis came back: %v", failed, err)
	}
	assertNoWorkerBlamed(t, h)
	if firing, resolved := h.Sent.Rule(fleet.RuleStoreUnavailable); firing != 1 || resolved != 1 {
		t.Errorf("after recovery: store_unavailable firing %d, resolved %d; want 1 and 1", firing, resolved)
	}
	workers, err := h.Service.WorkersByID(context.Background(), outageWorkers)
	if err != nil {
		t.Fatal(err)
	}
	if len(workers) != len(outageWorkers) {
		t.Errorf("after recovery %d of %d workers are back", len(workers), len(outageWorkers))
	}
}

// partitionHarness puts a proxy between the engines and the test's Redis,
// so that cutting it makes Redis unreachable while it keeps every key.
func partitionHarness(t *testing.T) (*alerttest.Harness, *alerttest.Proxy) {
	t.Helper()
	addr, db, _ := testenv.Redis(t)
	proxy := alerttest.StartProxy(t, addr)
	return alerttest.New(t, outageClient(t, proxy.Addr, db)), proxy
}

// partition runs a 90 s partition with leader checking, and returns once
// Redis is reachable again but before any worker's next heartbeat.
func partition(t *testing.T, h *alerttest.Harness, proxy *alerttest.Proxy, leader *alerttest.Replica) {
	t.Helper()
	if failed, err := outageSteps(t, h, leader, 3); failed != 0 {
		t.Fatalf("%d checks failed before the partition: %v", failed, err)
	}
	proxy.Cut()
	if failed, _ := outageSteps(t, h, leader, 18); failed != 18 {
		t.Errorf("%d of 18 checks failed during the partition, want all", failed)
	}
	if firing, _ := h.Sent.Rule(fleet.RuleStoreUnavailable); firing != 1 {
		t.Errorf("90 s partition: %d store_unavailable notifications, want 1", firing)
	}
	proxy.Restore()
	h.Clock.Advance(time.Second)
}

func TestPartitionBlamesNoWorker(t *testing.T) {
	h, proxy := partitionHarness(t)
	r := h.Replica(alerttest.Options())
	partition(t, h, proxy, r)

	// The same replica checks first after the partition, then the workers
	// heartbeat again.
	r.MustCheck()
	if failed, err := outageSteps(t, h, r, 6); failed != 0 {
		t.Errorf("%d checks failed after the partition: %v", failed, err)
	}
	assertNoWorkerBlamed(t, h)
	if firing, resolved := h.Sent.Rule(fleet.RuleStoreUnavailable); firing != 1 || resolved != 1 {
		t.Errorf("after the partition: store_unavailable firing %d, resolved %d; want 1 and 1", firing, resolved)
	}
}

// TestPartitionWithNewLeaderBlamesNoWorker lets another replica win the
// scheduler lock when Redis comes back, which happens when its renewal
// comes first: the lock expired in Redis during the partition.
func TestPartitionWithNewLeaderBlamesNoWorker(t *testing.T) {
	h, proxy := partitionHarness(t)
	old, next := h.Replica(alerttest.Options()), h.Replica(alerttest.Options())
	// Every replica's scheduler renews the lock every few seconds, so the
	// one that does not lead notes the outage too (scheduler.Options
	// OnStoreDown), and each records its end with its first renewal after
	// it (OnStoreBack), before the new leader's first check.
	next.StoreDown()
	partition(t, h, proxy, old)
	next.StoreBack(context.Background())
	old.StoreBack(context.Background())

	next.MustCheck()
	if failed, err := outageSteps(t, h, next, 6); failed != 0 {
		t.Errorf("%d checks failed after the partition: %v", failed, err)
	}
	assertNoWorkerBlamed(t, h)
	if _, resolved := h.Sent.Rule(fleet.RuleStoreUnavailable); resolved != 1 {
		t.Errorf("after the partition the new leader resolved store_unavailable %d times, want 1", resolved)
	}
}
