package alert_test

import (
	"context"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/alerttest"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/testenv"
)

// TestHousekeepingRemovesGhost preloads a worker written by a crashed
// process: last heartbeat two days ago, keys without an expiry.
func TestHousekeepingRemovesGhost(t *testing.T) {
	_, _, client := testenv.Redis(t)
	h := alerttest.New(t, client)
	r := h.Replica(alerttest.Options())
	ctx := context.Background()

	lastMS := h.Clock.Now().Add(-48 * time.Hour).UnixMilli()
	pipe := client.TxPipeline()
	pipe.Set(ctx, "worker:w-ghost:heartbeat", lastMS, 0)
	pipe.Set(ctx, "worker:w-ghost:status", "running", 0)
	pipe.HSet(ctx, "worker:w-ghost:meta", "pool", "billing")
	pipe.ZAdd(ctx, "workers:active", goredis.Z{Score: float64(lastMS), Member: "w-ghost"})
	pipe.SAdd(ctx, "pools:known", "billing")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("preload ghost: %v", err)
	}
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)

	ghost, err := h.Service.Worker(ctx, "w-ghost")
	if err != nil {
		t.Fatalf("read ghost: %v", err)
	}
	if !ghost.Stale || ghost.DisplayStatus() != "offline" {
		t.Errorf("ghost stale %v, shown as %q, want offline", ghost.Stale, ghost.DisplayStatus())
	}
	for range 3 {
		r.MustCheck()
		h.Clock.Advance(5 * time.Second)
		h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	}
	if n := h.Sent.Firing("heartbeat_missing/worker/w-ghost"); n != 1 {
		t.Errorf("ghost notified %d times, want 1", n)
	}

	if err := r.Housekeep(ctx); err != nil {
		t.Fatalf("housekeeping: %v", err)
	}
	if _, err := client.ZScore(ctx, "workers:active", "w-ghost").Result(); err == nil {
		t.Errorf("ghost is still in workers:active")
	}
	for _, key := range []string{"worker:w-ghost:heartbeat", "worker:w-ghost:status", "worker:w-ghost:meta"} {
		if n := client.Exists(ctx, key).Val(); n != 0 {
			t.Errorf("%s is left after housekeeping", key)
		}
	}
	keys, err := client.Keys(ctx, "worker:w-ghost:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if ttl := client.PTTL(ctx, key).Val(); ttl < 0 {
			t.Errorf("%s is left without an expiry (PTTL %s)", key, ttl)
		}
	}
	if _, err := client.ZScore(ctx, "workers:active", "w-01").Result(); err != nil {
		t.Errorf("live worker w-01 was removed from workers:active: %v", err)
	}

	entries, err := h.Service.Audit(ctx, "", 20)
	if err != nil {
		t.Fatalf("read audit: %v", err)
	}
	var cleanup *fleet.AuditEntry
	for i, e := range entries {
		if e.Kind == fleet.AuditCleanup && e.WorkerID == "w-ghost" {
			cleanup = &entries[i]
		}
	}
	if cleanup == nil {
		t.Fatalf("no cleanup entry for w-ghost in the audit trail: %+v", entries)
	}
	if cleanup.Source != fleet.SourceAuto || !strings.Contains(cleanup.Reason, "retention period") {
		t.Errorf("cleanup entry %+v, want source auto and the retention as reason", cleanup)
	}
}

func TestHousekeepingKeepsRecentWorkers(t *testing.T) {
	h := newHarness(t)
	r := h.Replica(alerttest.Options())
	h.Heartbeat("w-01", "billing", fleet.StateRunning, nil)
	h.Clock.Advance(23 * time.Hour)
	if err := r.Housekeep(context.Background()); err != nil {
		t.Fatalf("housekeeping: %v", err)
	}
	if _, err := h.Service.Worker(context.Background(), "w-01"); err != nil {
		t.Errorf("a worker silent for 23 h of a 24 h retention was removed: %v", err)
	}
}
