package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingServer is a control plane stub that records each heartbeat and
// lets the test choose each response.
type recordingServer struct {
	*httptest.Server

	mu      sync.Mutex
	times   []time.Time
	bodies  []Heartbeat
	respond func(n int, w http.ResponseWriter) // n counts requests from 0
}

func newRecordingServer(t *testing.T, respond func(n int, w http.ResponseWriter)) *recordingServer {
	t.Helper()
	rs := &recordingServer{respond: respond}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var hb Heartbeat
		if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
			t.Errorf("decode heartbeat: %v", err)
		}
		rs.mu.Lock()
		n := len(rs.times)
		rs.times = append(rs.times, time.Now())
		rs.bodies = append(rs.bodies, hb)
		rs.mu.Unlock()
		rs.respond(n, w)
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *recordingServer) requests() ([]time.Time, []Heartbeat) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]time.Time(nil), rs.times...), append([]Heartbeat(nil), rs.bodies...)
}

func respondOK(desired string, intervalSeconds float64) func(int, http.ResponseWriter) {
	return func(_ int, w http.ResponseWriter) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"desired_state":              desired,
			"heartbeat_interval_seconds": intervalSeconds,
		})
	}
}

// runUntil runs w until srv has received n heartbeats, or fails the test
// after timeout. Waiting for a count, not counting in a fixed window, keeps
// the test right on a loaded machine.
func runUntil(t *testing.T, srv *recordingServer, w *Worker, n int, timeout time.Duration, status func() (string, map[string]float64), onDesired func(string)) []time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, status, onDesired) }()
	for {
		times, _ := srv.requests()
		if len(times) >= n {
			cancel()
			<-done
			return times
		}
		if ctx.Err() != nil {
			<-done
			t.Fatalf("got %d heartbeats in %s, want %d", len(times), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runWorker runs w for the given duration and returns Run's error.
func runWorker(t *testing.T, w *Worker, d time.Duration, status func() (string, map[string]float64), onDesired func(string)) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return w.Run(ctx, status, onDesired)
}

func TestWorkerFollowsServerInterval(t *testing.T) {
	srv := newRecordingServer(t, respondOK("running", 0.1))
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-1", Pool: "p", Interval: 10 * time.Second}

	// With the configured 10s interval, 3s allows one heartbeat; at the
	// server's 100ms it allows about 30. Four, within a deadline that a
	// loaded machine still meets, show that the server's interval won.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, nil, nil) }()
	for {
		if times, _ := srv.requests(); len(times) >= 4 {
			break
		}
		if ctx.Err() != nil {
			times, _ := srv.requests()
			t.Fatalf("got %d heartbeats in 3s, want at least 4 at the server's 100ms interval", len(times))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestWorkerFixedIntervalIgnoresServer(t *testing.T) {
	srv := newRecordingServer(t, respondOK("running", 0.1))
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-1", Pool: "p", Interval: 10 * time.Second, FixedInterval: true}

	_ = runWorker(t, w, 400*time.Millisecond, nil, nil)

	if times, _ := srv.requests(); len(times) != 1 {
		t.Errorf("got %d heartbeats in 400ms, want 1 with a fixed 10s interval", len(times))
	}
}

func TestWorkerSendsStatusAndCallsOnDesired(t *testing.T) {
	srv := newRecordingServer(t, respondOK("draining", 10))
	started := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-7", Pool: "emails", Host: "h1", PID: 42,
		Version: "2.0.0", StartedAt: started}

	var desired []string
	status := func() (string, map[string]float64) {
		return StatusPaused, map[string]float64{"jobs_processed": 3}
	}
	var mu sync.Mutex
	runUntil(t, srv, w, 1, 3*time.Second, status, func(d string) {
		mu.Lock()
		desired = append(desired, d)
		mu.Unlock()
	})
	mu.Lock()
	defer mu.Unlock()

	_, bodies := srv.requests()
	if len(bodies) != 1 {
		t.Fatalf("got %d heartbeats, want 1", len(bodies))
	}
	hb := bodies[0]
	if hb.ID != "w-7" || hb.Pool != "emails" || hb.Host != "h1" || hb.PID != 42 || hb.Version != "2.0.0" {
		t.Errorf("heartbeat identity = %+v, want w-7 in emails on h1, pid 42, version 2.0.0", hb)
	}
	if hb.Status != StatusPaused {
		t.Errorf("status = %q, want the value from the status func", hb.Status)
	}
	if hb.Metrics["jobs_processed"] != 3 {
		t.Errorf("metrics = %v, want jobs_processed 3", hb.Metrics)
	}
	if !hb.StartedAt.Equal(started) {
		t.Errorf("started_at = %v, want %v", hb.StartedAt, started)
	}
	if time.Since(hb.SentAt) > time.Minute {
		t.Errorf("sent_at = %v, want the time of sending", hb.SentAt)
	}
	if len(desired) != 1 || desired[0] != StatusDraining {
		t.Errorf("onDesired calls = %v, want [draining]", desired)
	}
}

func TestWorkerHonoursRetryAfter(t *testing.T) {
	srv := newRecordingServer(t, func(n int, w http.ResponseWriter) {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"state store unavailable"}}`)
			return
		}
		respondOK("running", 0.05)(n, w)
	})
	var retryIns []time.Duration
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-1", Pool: "p", Interval: 50 * time.Millisecond,
		OnError: func(err error, retryIn time.Duration) { retryIns = append(retryIns, retryIn) }}

	times := runUntil(t, srv, w, 2, 5*time.Second, nil, nil)

	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Errorf("retry came %v after the 503, want at least the 1s Retry-After", gap)
	}
	if len(retryIns) != 1 || retryIns[0] < time.Second || retryIns[0] > 1100*time.Millisecond {
		t.Errorf("OnError retry delays = %v, want one between 1s and 1.1s", retryIns)
	}
}

func TestWorkerBacksOffExponentially(t *testing.T) {
	srv := newRecordingServer(t, func(n int, w http.ResponseWriter) {
		w.WriteHeader(http.StatusInternalServerError)
	})
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-1", Pool: "p", Interval: 40 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond}

	// Waits are 40, 80, 160, 200 (capped), 200ms, each -10% at least.
	times := runUntil(t, srv, w, 6, 10*time.Second, nil, nil)
	want := []time.Duration{40, 80, 160, 200, 200}
	for i, base := range want {
		gap := times[i+1].Sub(times[i])
		if min := base * time.Millisecond * 9 / 10; gap < min {
			t.Errorf("wait %d = %v, want at least %v", i+1, gap, min)
		}
	}
	// Without the cap the 5th wait would be 640ms, at least 576ms after
	// jitter; capped, it is about 200ms, so 500ms leaves room for a busy
	// machine and still tells the two apart.
	if gap := times[5].Sub(times[4]); gap >= 500*time.Millisecond {
		t.Errorf("wait 5 = %v, want about 200ms with backoff capped at 200ms", gap)
	}
}

func TestWorkerRetriesPermanentErrorAtInterval(t *testing.T) {
	srv := newRecordingServer(t, func(n int, w http.ResponseWriter) {
		w.WriteHeader(http.StatusUnauthorized)
	})
	var errs []error
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-1", Pool: "p", Interval: 50 * time.Millisecond,
		OnError: func(err error, _ time.Duration) { errs = append(errs, err) }}

	// With backoff the 4th wait would be 400ms (at least 360ms after
	// jitter); at the plain 50ms interval it is about 50ms.
	times := runUntil(t, srv, w, 5, 5*time.Second, nil, nil)
	if gap := times[4].Sub(times[3]); gap >= 300*time.Millisecond {
		t.Errorf("wait 4 = %v, want about the 50ms interval without backoff", gap)
	}
	var apiErr *APIError
	if len(errs) == 0 || !errors.As(errs[0], &apiErr) || apiErr.StatusCode != 401 {
		t.Errorf("OnError errors = %v, want *APIError with status 401", errs)
	}
}

func TestWorkerReturnsAfterStoppedHeartbeat(t *testing.T) {
	srv := newRecordingServer(t, respondOK("stopped", 0.05))
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-1", Pool: "p", Interval: 50 * time.Millisecond}

	status := StatusRunning
	onDesired := func(desired string) {
		if desired == StatusStopped {
			status = StatusStopped
			w.HeartbeatNow()
		}
	}
	start := time.Now()
	err := runWorker(t, w, 2*time.Second, func() (string, map[string]float64) { return status, nil }, onDesired)

	if err != nil {
		t.Errorf("Run = %v, want nil after the stopped heartbeat", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Run took %v, want an immediate stopped heartbeat after HeartbeatNow", elapsed)
	}
	_, bodies := srv.requests()
	if len(bodies) != 2 || bodies[0].Status != StatusRunning || bodies[1].Status != StatusStopped {
		t.Errorf("statuses = %v, want [running stopped]", statuses(bodies))
	}
}

func TestWorkerHeartbeatNowDuringBackoffWaits(t *testing.T) {
	srv := newRecordingServer(t, func(n int, w http.ResponseWriter) {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		respondOK("running", 10)(n, w)
	})
	w := &Worker{Client: New(srv.URL, "t"), ID: "w-1", Pool: "p", Interval: 10 * time.Second}
	w.OnError = func(error, time.Duration) { w.HeartbeatNow() }

	_ = runWorker(t, w, 700*time.Millisecond, nil, nil)

	if times, _ := srv.requests(); len(times) != 1 {
		t.Errorf("got %d heartbeats within the 1s Retry-After, want 1", len(times))
	}
}

func TestWorkerRunRequiresFields(t *testing.T) {
	err := (&Worker{}).Run(context.Background(), nil, nil)
	if err == nil {
		t.Fatal("Run without Client, ID and Pool returned nil")
	}
	for _, field := range []string{"Client", "ID", "Pool"} {
		if !strings.Contains(err.Error(), field+" is missing") {
			t.Errorf("error = %q, want it to name %s", err, field)
		}
	}
}

func statuses(bodies []Heartbeat) []string {
	var out []string
	for _, hb := range bodies {
		out = append(out, hb.Status)
	}
	return out
}
