package load

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testToken = "load-token"

// heartbeatBody is the heartbeat contract; decoding with
// DisallowUnknownFields catches a misspelled key.
type heartbeatBody struct {
	ID        string             `json:"id"`
	Pool      string             `json:"pool"`
	Status    string             `json:"status"`
	Host      string             `json:"host"`
	PID       int                `json:"pid"`
	Version   string             `json:"version"`
	StartedAt time.Time          `json:"started_at"`
	SentAt    time.Time          `json:"sent_at"`
	Metrics   map[string]float64 `json:"metrics"`
}

// heartbeatServer is a control plane stub that checks each heartbeat and
// records the bodies it accepted.
type heartbeatServer struct {
	*httptest.Server
	t *testing.T

	mu       sync.Mutex
	bodies   []heartbeatBody
	requests atomic.Int64
	// status, when set, chooses the response status of request n (from 0).
	status func(n int64) int
}

func newHeartbeatServer(t *testing.T) *heartbeatServer {
	t.Helper()
	hs := &heartbeatServer{t: t}
	hs.Server = httptest.NewServer(http.HandlerFunc(hs.serve))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *heartbeatServer) serve(w http.ResponseWriter, r *http.Request) {
	n := hs.requests.Add(1) - 1
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/healthz":
		if r.Header.Get("Authorization") != "" {
			hs.t.Errorf("healthz request has an Authorization header, want none")
		}
		_, _ = io.WriteString(w, "ok")
		return
	case r.Method != http.MethodPost || r.URL.Path != "/api/workers/heartbeat":
		hs.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+testToken {
		hs.t.Errorf("Authorization = %q, want bearer token", got)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		hs.t.Errorf("Content-Type = %q, want application/json", got)
	}

	decoder := json.NewDecoder(r.Body)
	decoder.DisallowUnknownFields()
	var body heartbeatBody
	if err := decoder.Decode(&body); err != nil {
		hs.t.Errorf("decode heartbeat: %v", err)
	}
	hs.mu.Lock()
	hs.bodies = append(hs.bodies, body)
	hs.mu.Unlock()

	hs.mu.Lock()
	chooseStatus := hs.status
	hs.mu.Unlock()
	if chooseStatus != nil {
		if status := chooseStatus(n); status != http.StatusOK {
			w.WriteHeader(status)
			return
		}
	}
	_, _ = io.WriteString(w, `{"desired_state":"running","heartbeat_interval_seconds":5}`)
}

func (hs *heartbeatServer) heartbeats() []heartbeatBody {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]heartbeatBody(nil), hs.bodies...)
}

func TestRunHeartbeatClosedLoop(t *testing.T) {
	hs := newHeartbeatServer(t)
	cfg := Config{URL: hs.URL, Token: testToken, Concurrency: 4, Duration: 300 * time.Millisecond,
		Workers: 20, Pools: 4}

	result, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	// A local server answers in well under a millisecond; five requests
	// in 300ms still hold on a machine busy with other tests.
	if result.Requests < 5 {
		t.Fatalf("Requests = %d in 300ms against a local server, want at least 5", result.Requests)
	}
	if result.Errors != 0 {
		t.Errorf("Errors = %d (first: %s), want 0", result.Errors, result.FirstError)
	}
	if result.StatusCounts[200] != result.Requests || len(result.StatusCounts) != 1 {
		t.Errorf("StatusCounts = %v, want only 200: %d", result.StatusCounts, result.Requests)
	}
	if served := hs.requests.Load(); served != result.Requests {
		t.Errorf("server handled %d requests, Result counts %d", served, result.Requests)
	}
	if result.Duration < 300*time.Millisecond || result.Duration > 2*time.Second {
		t.Errorf("Duration = %v, want about 300ms", result.Duration)
	}
	if want := float64(result.Requests) / result.Duration.Seconds(); math.Abs(result.Throughput-want) > 1e-6*want {
		t.Errorf("Throughput = %v, want Requests/Duration = %v", result.Throughput, want)
	}
	if !(0 < result.P50 && result.P50 <= result.P90 && result.P90 <= result.P99 && result.P99 <= result.Max) {
		t.Errorf("latencies p50 %v, p90 %v, p99 %v, max %v, want 0 < p50 <= p90 <= p99 <= max",
			result.P50, result.P90, result.P99, result.Max)
	}

	ids := map[string]bool{}
	for _, hb := range hs.heartbeats() {
		ids[hb.ID] = true
		if hb.Status != "running" || hb.Version != "load" || hb.PID == 0 {
			t.Errorf("heartbeat %+v, want status running, version load and a pid", hb)
			break
		}
		if !strings.HasPrefix(hb.ID, hb.Pool+"-") {
			t.Errorf("id %q is not in pool %q", hb.ID, hb.Pool)
		}
		if hb.SentAt.IsZero() || hb.StartedAt.IsZero() {
			t.Errorf("heartbeat %s has sent_at %v and started_at %v, want both set", hb.ID, hb.SentAt, hb.StartedAt)
		}
	}
	if len(ids) != 20 {
		t.Errorf("got %d distinct worker ids, want all 20", len(ids))
	}
}

func TestRunCountersIncreasePerWorker(t *testing.T) {
	hs := newHeartbeatServer(t)
	cfg := Config{URL: hs.URL, Token: testToken, Concurrency: 1, Duration: 150 * time.Millisecond,
		Workers: 3, Pools: 1}

	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("Run: %v", err)
	}

	last := map[string]heartbeatBody{}
	for _, hb := range hs.heartbeats() {
		if previous, seen := last[hb.ID]; seen {
			if hb.Metrics["jobs_processed"] <= previous.Metrics["jobs_processed"] {
				t.Fatalf("%s: jobs_processed went from %v to %v, want it to grow",
					hb.ID, previous.Metrics["jobs_processed"], hb.Metrics["jobs_processed"])
			}
			if hb.Metrics["jobs_failed"] < previous.Metrics["jobs_failed"] {
				t.Fatalf("%s: jobs_failed went from %v to %v", hb.ID, previous.Metrics["jobs_failed"], hb.Metrics["jobs_failed"])
			}
		}
		last[hb.ID] = hb
	}
	if len(last) != 3 {
		t.Errorf("got %d worker ids, want 3", len(last))
	}
}

func TestRunHealthz(t *testing.T) {
	hs := newHeartbeatServer(t)

	result, err := Run(context.Background(), Config{URL: hs.URL, Target: TargetHealthz, Concurrency: 2,
		Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if result.Requests == 0 || result.Errors != 0 {
		t.Errorf("Requests = %d, Errors = %d, want some requests and no errors", result.Requests, result.Errors)
	}
	if len(hs.heartbeats()) != 0 {
		t.Errorf("healthz run sent %d heartbeats, want 0", len(hs.heartbeats()))
	}
}

func TestRunFixedRate(t *testing.T) {
	hs := newHeartbeatServer(t)
	cfg := Config{URL: hs.URL, Token: testToken, Concurrency: 8, Duration: 300 * time.Millisecond,
		Workers: 10, Rate: 200}

	result, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	// 200/s for 300ms schedules 60 requests, at 0, 5, ..., 295ms.
	if result.Requests < 50 || result.Requests > 60 {
		t.Errorf("Requests = %d, want about 60 at 200/s for 300ms", result.Requests)
	}
	if result.TargetRate != 200 {
		t.Errorf("TargetRate = %v, want 200", result.TargetRate)
	}
	if !strings.Contains(result.String(), "target 200.0/s") {
		t.Errorf("String() = %q, want the target rate", result.String())
	}
}

func TestRunCountsErrorStatuses(t *testing.T) {
	hs := newHeartbeatServer(t)
	hs.mu.Lock()
	hs.status = func(n int64) int {
		if n%2 == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	hs.mu.Unlock()

	result, err := Run(context.Background(), Config{URL: hs.URL, Token: testToken, Concurrency: 1,
		Duration: 100 * time.Millisecond, Workers: 5})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	if result.Errors != result.StatusCounts[503] || result.Errors == 0 {
		t.Errorf("Errors = %d, StatusCounts = %v, want every 503 counted as an error", result.Errors, result.StatusCounts)
	}
	if result.StatusCounts[200]+result.StatusCounts[503] != result.Requests {
		t.Errorf("StatusCounts = %v, want them to add up to Requests %d", result.StatusCounts, result.Requests)
	}
	if result.FirstError != "HTTP 503 Service Unavailable" {
		t.Errorf("FirstError = %q, want HTTP 503 Service Unavailable", result.FirstError)
	}
}

func TestRunTransportErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()

	result, err := Run(context.Background(), Config{URL: url, Target: TargetHealthz, Concurrency: 2,
		Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if result.Requests == 0 || result.Errors != result.Requests {
		t.Errorf("Requests = %d, Errors = %d, want every request failed", result.Requests, result.Errors)
	}
	if len(result.StatusCounts) != 0 || result.Max != 0 {
		t.Errorf("StatusCounts = %v, Max = %v, want no responses and no latency", result.StatusCounts, result.Max)
	}
	if !strings.Contains(result.FirstError, "connection refused") {
		t.Errorf("FirstError = %q, want connection refused", result.FirstError)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	hs := newHeartbeatServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()

	start := time.Now()
	result, err := Run(ctx, Config{URL: hs.URL, Token: testToken, Concurrency: 2, Duration: time.Minute, Workers: 5})

	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Run took %v after a 100ms context, want it to stop early", elapsed)
	}
	if result.Requests == 0 || result.Errors != 0 {
		t.Errorf("Requests = %d, Errors = %d, want a partial result without errors", result.Requests, result.Errors)
	}
}

func TestRunRejectsInvalidConfig(t *testing.T) {
	_, err := Run(context.Background(), Config{URL: "localhost:8080"})
	if err == nil {
		t.Fatal("Run with an invalid Config returned nil")
	}
	for _, want := range []string{"url", "token is missing", "duration"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error = %q, want it to mention %q", err, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	valid := Config{URL: "http://127.0.0.1:8080", Token: "t", Duration: time.Second}
	if err := valid.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v, want nil", valid, err)
	}

	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"unknown target", func(c *Config) { c.Target = "metrics" }, `target "metrics" is invalid`},
		{"healthz without token", func(c *Config) { c.Target, c.Token = TargetHealthz, "" }, ""},
		{"negative concurrency", func(c *Config) { c.Concurrency = -1 }, "concurrency -1"},
		{"huge concurrency", func(c *Config) { c.Concurrency = MaxConcurrency + 1 }, "concurrency"},
		{"negative workers", func(c *Config) { c.Workers = -5 }, "workers -5"},
		{"more pools than workers", func(c *Config) { c.Workers, c.Pools = 3, 4 }, "pools 4"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate -1"},
		{"infinite rate", func(c *Config) { c.Rate = math.Inf(1) }, "rate +Inf"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.modify(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{
		{0.50, 50 * time.Millisecond},
		{0.90, 90 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{1.00, 100 * time.Millisecond},
		{0.001, 1 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(sorted, tt.p); got != tt.want {
			t.Errorf("percentile(1..100ms, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("percentile of one value = %v, want 7ns", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
}

func TestResultString(t *testing.T) {
	r := Result{
		Requests: 1000, Errors: 2, Duration: 2 * time.Second, Throughput: 500,
		P50: 1234567, P90: 2 * time.Millisecond, P99: 5 * time.Millisecond, Max: 1500 * time.Millisecond,
		StatusCounts: map[int]int64{503: 2, 200: 998}, FirstError: "HTTP 503 Service Unavailable",
	}
	want := "requests  1000 in 2s (500.0/s), errors 2\n" +
		"latency   p50 1.23ms, p90 2ms, p99 5ms, max 1.5s\n" +
		"statuses  200: 998, 503: 2\n" +
		"first error: HTTP 503 Service Unavailable\n"
	if got := r.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}
}

func TestHeartbeatBodyIsValidJSON(t *testing.T) {
	cfg := Config{URL: "http://127.0.0.1:1", Token: "t", Workers: 4, Pools: 2}.withDefaults()
	builder := newRequestBuilder(cfg, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	now := time.Date(2025, 1, 1, 0, 0, 5, 0, time.FixedZone("", -5*3600))

	var hb heartbeatBody
	decoder := json.NewDecoder(strings.NewReader(string(builder.heartbeatBody(9, now))))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&hb); err != nil {
		t.Fatalf("decode body: %v", err)
	}

	// Request 9 of 4 workers is worker 1's third heartbeat (beat 2).
	if hb.ID != "load-pool-2-1" || hb.Pool != "load-pool-2" {
		t.Errorf("id %q in pool %q, want load-pool-2-1 in load-pool-2", hb.ID, hb.Pool)
	}
	if hb.Metrics["jobs_processed"] != 20 {
		t.Errorf("jobs_processed = %v, want 20", hb.Metrics["jobs_processed"])
	}
	if !hb.SentAt.Equal(now) {
		t.Errorf("sent_at = %v, want %v", hb.SentAt, now)
	}
	if _, offset := hb.SentAt.Zone(); offset != -5*3600 {
		t.Errorf("sent_at offset = %d, want the zone -05:00 kept", offset)
	}
}
