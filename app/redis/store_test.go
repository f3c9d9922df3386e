package redis

import (
	"context"
	"os"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const testTTL = time.Hour

func newStore(t *testing.T) (*Store, *goredis.Client) {
	t.Helper()
	_, _, rdb := testenv.Redis(t)
	return New(rdb, Options{WorkerTTL: testTTL, Timeout: 2 * time.Second}), rdb
}

func heartbeat(id, pool string, status fleet.State, at time.Time) *fleet.Heartbeat {
	return &fleet.Heartbeat{
		ID: id, Pool: pool, Status: status, Host: "host-1", PID: 42, Version: "1.0.0",
		Metrics:    map[string]float64{"jobs_processed": 1200, "jobs_failed": 12, "memory_mb": 256},
		ReceivedAt: at,
	}
}

func TestHeartbeatWritesEveryKeyWithExpiry(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

	desired, err := s.Heartbeat(ctx, heartbeat("w-01", "billing", fleet.StateRunning, at))
	if err != nil {
		t.Fatal(err)
	}
	if desired != fleet.StateRunning {
		t.Errorf("desired = %q, want running for a worker no command touched", desired)
	}

	for _, key := range []string{statusKey("w-01"), heartbeatKey("w-01"), metaKey("w-01"), metricsKey("w-01")} {
		ttl := rdb.TTL(ctx, key).Val()
		if ttl <= 0 || ttl > testTTL {
			t.Errorf("TTL of %s = %v, want in (0, %v]", key, ttl, testTTL)
		}
	}
	if got := rdb.Get(ctx, statusKey("w-01")).Val(); got != "running" {
		t.Errorf("status key = %q", got)
	}
	if got := rdb.Get(ctx, heartbeatKey("w-01")).Val(); got != "1796378400000" {
		t.Errorf("heartbeat key = %q, want the receive time in Unix ms", got)
	}
	if score := rdb.ZScore(ctx, activeKey, "w-01").Val(); score != float64(at.UnixMilli()) {
		t.Errorf("active set score = %v", score)
	}
	if !rdb.SIsMember(ctx, poolsKey, "billing").Val() {
		t.Error("billing not in pools:known")
	}
	if rdb.Exists(ctx, desiredKey("w-01")).Val() != 0 {
		t.Error("a heartbeat wrote the desired state")
	}
	if got := rdb.HGet(ctx, metricsKey("w-01"), "jobs_failed").Val(); got != "12" {
		t.Errorf("metrics jobs_failed = %q", got)
	}
}

func TestHeartbeatNeverOverwritesDesiredState(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	now := time.Now()
	if _, err := s.Heartbeat(ctx, heartbeat("w-01", "billing", fleet.StateRunning, now)); err != nil {
		t.Fatal(err)
	}
	cmd := fleet.Command{Action: fleet.ActionDrain, From: fleet.StateRunning, To: fleet.StateDraining, Actor: "ops", Source: fleet.SourceAPI, At: now}
	if err := s.SetDesired(ctx, "w-01", cmd); err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		desired, err := s.Heartbeat(ctx, heartbeat("w-01", "billing", fleet.StateRunning, now.Add(time.Duration(i+1)*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		if desired != fleet.StateDraining {
			t.Fatalf("heartbeat %d got desired %q, want draining until the worker complies", i+1, desired)
		}
	}
	if got := rdb.Get(ctx, desiredKey("w-01")).Val(); got != "draining" {
		t.Errorf("desired key = %q after heartbeats", got)
	}
	if ttl := rdb.TTL(ctx, desiredKey("w-01")).Val(); ttl <= 0 {
		t.Errorf("desired key TTL = %v, want an expiry", ttl)
	}
}

func TestSetDesiredRejectsStaleExpectation(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	now := time.Now()
	pause := fleet.Command{Action: fleet.ActionPause, From: fleet.StateRunning, To: fleet.StatePaused, At: now}
	if err := s.SetDesired(ctx, "w-01", pause); err != nil {
		t.Fatal(err)
	}
	// A second operator who also saw "running" must not blindly overwrite.
	drain := fleet.Command{Action: fleet.ActionDrain, From: fleet.StateRunning, To: fleet.StateDraining, At: now}
	err := s.SetDesired(ctx, "w-01", drain)
	if fleet.ErrorCode(err) != fleet.ECONFLICT {
		t.Fatalf("err = %v, want a conflict", err)
	}
}

func TestWorkerReadsBackWhatHeartbeatWrote(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	hb := heartbeat("w-01", "billing", fleet.StatePaused, at)
	hb.SentAt = at.Add(-10 * time.Minute)
	if _, err := s.Heartbeat(ctx, hb); err != nil {
		t.Fatal(err)
	}

	w, err := s.Worker(ctx, "w-01")
	if err != nil {
		t.Fatal(err)
	}
	if w.Pool != "billing" || w.Status != fleet.StatePaused || w.Host != "host-1" || w.PID != 42 || w.Version != "1.0.0" {
		t.Errorf("worker = %+v", w)
	}
	if !w.LastHeartbeat.Equal(at) {
		t.Errorf("last heartbeat = %v, want %v", w.LastHeartbeat, at)
	}
	if w.ClockSkew != -10*time.Minute {
		t.Errorf("clock skew = %v, want -10m", w.ClockSkew)
	}
	if w.Metrics["jobs_processed"] != 1200 {
		t.Errorf("metrics = %v", w.Metrics)
	}
	if _, err := s.Worker(ctx, "w-unknown"); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Errorf("unknown worker err = %v, want not found", err)
	}
}

func TestGhostWorkerWithoutTTLIsOfflineAndRemovable(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	now := time.Now()
	twoDaysAgo := now.Add(-48 * time.Hour).UnixMilli()
	// Written by an older tool: no expiry, no index entry.
	rdb.Set(ctx, heartbeatKey("w-ghost"), twoDaysAgo, 0)
	rdb.Set(ctx, statusKey("w-ghost"), "running", 0)
	rdb.HSet(ctx, metaKey("w-ghost"), "pool", "billing")
	rdb.ZAdd(ctx, activeKey, goredis.Z{Score: float64(twoDaysAgo), Member: "w-ghost"})
	rdb.SAdd(ctx, poolsKey, "billing")

	entries, err := s.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Pool != "billing" || entries[0].Status != fleet.StateRunning {
		t.Fatalf("index entries = %+v, want the ghost read from its own keys", entries)
	}
	w, err := s.Worker(ctx, "w-ghost")
	if err != nil {
		t.Fatal(err)
	}
	w.Derive(now, 30*time.Second)
	if !w.Stale || w.DisplayStatus() != "offline" {
		t.Errorf("ghost stale = %v, display %q; want offline from the heartbeat's age", w.Stale, w.DisplayStatus())
	}

	silent, err := s.SilentSince(ctx, now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(silent) != 1 || silent[0] != "w-ghost" {
		t.Fatalf("silent = %v", silent)
	}
	if err := s.RemoveWorkers(ctx, silent); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, heartbeatKey("w-ghost"), statusKey("w-ghost"), metaKey("w-ghost")).Val(); n != 0 {
		t.Errorf("%d ghost keys left", n)
	}
	if rdb.ZCard(ctx, activeKey).Val() != 0 {
		t.Error("ghost still in the active set")
	}
}

func TestIndexFollowsPoolAndStatusChanges(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	now := time.Now()
	must := func(hb *fleet.Heartbeat) {
		if _, err := s.Heartbeat(ctx, hb); err != nil {
			t.Fatal(err)
		}
	}
	must(heartbeat("w-01", "billing", fleet.StateRunning, now))
	must(heartbeat("w-02", "billing", fleet.StateRunning, now))
	must(heartbeat("w-01", "emails", fleet.StatePaused, now.Add(time.Second)))

	entries, err := s.Index(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]fleet.PoolEntry{}
	for _, e := range entries {
		got[e.ID] = e
	}
	if e := got["w-01"]; e.Pool != "emails" || e.Status != fleet.StatePaused || e.Host != "host-1" {
		t.Errorf("w-01 entry = %+v, want the latest pool and status", e)
	}
	if e := got["w-02"]; e.Pool != "billing" {
		t.Errorf("w-02 entry = %+v", e)
	}
}

func TestScaleReturnsPreviousCount(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	prev, err := s.Scale(ctx, "billing", 3)
	if err != nil || prev != -1 {
		t.Fatalf("first scale = %d, %v; want -1 (none)", prev, err)
	}
	prev, err = s.Scale(ctx, "billing", 5)
	if err != nil || prev != 3 {
		t.Fatalf("second scale = %d, %v; want 3", prev, err)
	}
	known, desired, err := s.PoolState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(known) != 1 || desired["billing"] != 5 {
		t.Errorf("known %v desired %v", known, desired)
	}
}

func TestAuditListsNewestFirstAndCaps(t *testing.T) {
	_, _, rdb := testenv.Redis(t)
	s := New(rdb, Options{WorkerTTL: testTTL, WorkerAuditCap: 3})
	ctx := context.Background()
	base := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for i := range 5 {
		e := fleet.AuditEntry{At: base.Add(time.Duration(i) * time.Minute), Actor: "ops", Kind: fleet.AuditCommand, Action: "pause", WorkerID: "w-01"}
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := s.ListAudit(ctx, "w-01", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("worker entries = %d, want the cap of 3", len(entries))
	}
	if !entries[0].At.Equal(base.Add(4 * time.Minute)) {
		t.Errorf("first entry at %v, want the newest", entries[0].At)
	}
	all, err := s.ListAudit(ctx, "", 10)
	if err != nil || len(all) != 5 {
		t.Errorf("fleet entries = %d, %v", len(all), err)
	}
}

func TestUnreachableRedisIsUnavailable(t *testing.T) {
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	s := New(rdb, Options{Timeout: 300 * time.Millisecond})
	_, err := s.Heartbeat(context.Background(), heartbeat("w-01", "billing", fleet.StateRunning, time.Now()))
	if fleet.ErrorCode(err) != fleet.EUNAVAILABLE {
		t.Fatalf("err = %v, want unavailable", err)
	}
}
