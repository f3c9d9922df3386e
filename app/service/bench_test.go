package service_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/service"
)

// seedFleet gives the fixture n workers in 50 pools, with host and metrics
// like a real heartbeat's.
func seedFleet(tb testing.TB, f *fixture, n int) {
	tb.Helper()
	for i := range n {
		hb := &fleet.Heartbeat{
			ID: fmt.Sprintf("w-%05d", i), Pool: fmt.Sprintf("pool-%02d", i%50), Status: fleet.StateRunning,
			Host: fmt.Sprintf("host-%03d", i%300), Metrics: map[string]float64{"jobs_processed": 100, "jobs_failed": 1, "memory_mb": 200},
		}
		if _, err := f.svc.Heartbeat(context.Background(), hb); err != nil {
			tb.Fatalf("heartbeat: %v", err)
		}
	}
}

// BenchmarkListWorkers10k lists the first page of 100 of a 10,000-worker
// fleet, as GET /api/workers does. Run it against a real Redis:
// REDIS_TEST_ADDR=127.0.0.1:6379 go test ./app/service -run '^$' -bench .
func BenchmarkListWorkers10k(b *testing.B) {
	f := newFixture(b)
	seedFleet(b, f, 10_000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.svc.ListWorkers(context.Background(), service.WorkerFilter{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPools10k counts the pools of a 10,000-worker fleet, as
// GET /api/pools does.
func BenchmarkPools10k(b *testing.B) {
	f := newFixture(b)
	seedFleet(b, f, 10_000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.svc.Pools(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
