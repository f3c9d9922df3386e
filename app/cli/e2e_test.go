package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/simulate"
	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	e2eToken   = "e2e-test-token-0123456789abcdef"
	e2eWorkers = 20
	// e2eInterval is the simulated workers' heartbeat interval. Each worker
	// keeps it for the whole run, so commands reach it within about 220 ms.
	e2eInterval = 200 * time.Millisecond
	// e2eGrace is the server's heartbeat grace period, after which a silent
	// worker is stale.
	e2eGrace = 3 * time.Second
)

// e2eWorker is the part of a worker in the API's JSON that the test reads.
type e2eWorker struct {
	ID              string             `json:"id"`
	Pool            string             `json:"pool"`
	Status          string             `json:"status"`
	DesiredState    string             `json:"desired_state"`
	Pending         bool               `json:"pending"`
	LastHeartbeatAt *time.Time         `json:"last_heartbeat_at"`
	Stale           bool               `json:"stale"`
	Metrics         map[string]float64 `json:"metrics"`
}

type e2eWorkerList struct {
	Workers []e2eWorker `json:"workers"`
	Total   int         `json:"total"`
}

// e2eAPI calls the running server with the bearer token.
type e2eAPI struct {
	t    *testing.T
	base string
	http *http.Client
}

// do sends one request and returns the status and body. An empty token
// sends no Authorization header.
func (a *e2eAPI) do(method, path, token string) (int, http.Header, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, nil)
	if err != nil {
		a.t.Fatalf("build %s %s: %v", method, path, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := a.http.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatalf("read %s %s: %v", method, path, err)
	}
	return res.StatusCode, res.Header, body
}

// getJSON sends an authenticated GET, expects 200 and decodes the body.
func (a *e2eAPI) getJSON(path string, v any) {
	a.t.Helper()
	status, _, body := a.do(http.MethodGet, path, e2eToken)
	if status != http.StatusOK {
		a.t.Fatalf("GET %s: status %d, body %s", path, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		a.t.Fatalf("GET %s: decode %s: %v", path, body, err)
	}
}

func (a *e2eAPI) worker(id string) e2eWorker {
	a.t.Helper()
	var w e2eWorker
	a.getJSON("/api/workers/"+id, &w)
	return w
}

// command posts a worker command, expects 200 and returns the worker.
func (a *e2eAPI) command(id, action string) e2eWorker {
	a.t.Helper()
	status, _, body := a.do(http.MethodPost, "/api/workers/"+id+"/"+action, e2eToken)
	if status != http.StatusOK {
		a.t.Fatalf("POST %s %s: status %d, body %s", id, action, status, body)
	}
	var w e2eWorker
	if err := json.Unmarshal(body, &w); err != nil {
		a.t.Fatalf("POST %s %s: decode %s: %v", id, action, body, err)
	}
	return w
}

// waitFor polls cond every 50 ms until it returns "" or the timeout passes,
// then fails with cond's last description of what it still waits for.
func waitFor(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		waiting := cond()
		if waiting == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, waiting)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stateOf(f *simulate.Fleet, id string) simulate.WorkerState {
	for _, s := range f.Snapshot() {
		if s.ID == id {
			return s
		}
	}
	return simulate.WorkerState{}
}

// startE2EServer starts the real server on a free loopback port, on the
// test's Redis, and shuts it down when the test ends.
func startE2EServer(t *testing.T, log *slog.Logger) *App {
	t.Helper()
	addr, db, _ := testenv.Redis(t)
	env := map[string]string{
		"HTTP_ADDR":                     "127.0.0.1:0",
		"CONTROL_PLANE_TOKEN":           e2eToken,
		"REDIS_ADDR":                    addr,
		"REDIS_DB":                      strconv.Itoa(db),
		"HEARTBEAT_INTERVAL_SECONDS":    "1",
		"ALERT_HEARTBEAT_GRACE_SECONDS": strconv.Itoa(int(e2eGrace / time.Second)),
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	app, err := Start(cfg, log)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { app.Shutdown(context.Background()) })
	return app
}

// startE2EFleet runs twenty simulated workers in two pools against url until
// the test ends.
func startE2EFleet(t *testing.T, url string, log *slog.Logger) *simulate.Fleet {
	t.Helper()
	fleet, err := simulate.NewFleet(simulate.Config{
		URL: url, Token: e2eToken,
		Workers: e2eWorkers, Pools: 2,
		Interval: e2eInterval, FixedInterval: true,
		JobDuration: 50 * time.Millisecond,
		FailureRate: 0.1,
		IDPrefix:    "e2e",
		Seed:        1,
	}, log)
	if err != nil {
		t.Fatalf("build fleet: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx) }()
	// Cleanups run in reverse order, so the fleet stops before the server
	// and the workers' last heartbeats still reach it.
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fleet run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("fleet did not stop within 10 s of its context ending")
		}
	})
	return fleet
}

// TestEndToEndPauseAndDrain runs the real server on 127.0.0.1 with twenty
// simulated workers heartbeating over HTTP, pauses one and drains another
// through the API, and checks that each worker obeys and that the API shows
// what the workers report.
func TestEndToEndPauseAndDrain(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	app := startE2EServer(t, log)
	api := &e2eAPI{t: t, base: app.URL(), http: &http.Client{Timeout: 5 * time.Second}}
	fleet := startE2EFleet(t, app.URL(), log)

	// Every worker shows up live and running.
	waitFor(t, 10*time.Second, func() string {
		var list e2eWorkerList
		api.getJSON("/api/workers?stale=false&status=running", &list)
		if list.Total != e2eWorkers {
			return fmt.Sprintf("%d live running workers in GET /api/workers (have %d)", e2eWorkers, list.Total)
		}
		return ""
	})
	var pools struct {
		Pools []struct {
			Pool string `json:"pool"`
			Live int    `json:"live"`
		} `json:"pools"`
	}
	api.getJSON("/api/pools", &pools)
	if len(pools.Pools) != 2 {
		t.Fatalf("GET /api/pools lists %d pools, want 2: %+v", len(pools.Pools), pools.Pools)
	}
	for _, p := range pools.Pools {
		if p.Live != e2eWorkers/2 {
			t.Errorf("pool %s has %d live workers, want %d", p.Pool, p.Live, e2eWorkers/2)
		}
	}

	states := fleet.Snapshot()
	pausedID, drainedID, runningID := states[0].ID, states[1].ID, states[2].ID

	// Pause one worker and drain another.
	if w := api.command(pausedID, "pause"); w.DesiredState != "paused" {
		t.Errorf("pause response: desired_state %q, want paused", w.DesiredState)
	}
	if w := api.command(drainedID, "drain"); w.DesiredState != "draining" {
		t.Errorf("drain response: desired_state %q, want draining", w.DesiredState)
	}

	// The paused worker receives paused in a heartbeat response, reports
	// paused, and the API shows the command as applied.
	waitFor(t, 5*time.Second, func() string {
		s := stateOf(fleet, pausedID)
		if s.DesiredState != "paused" || s.Status != "paused" || s.Busy {
			return fmt.Sprintf("simulated %s to be paused and idle (have %+v)", pausedID, s)
		}
		w := api.worker(pausedID)
		if w.Status != "paused" || w.Pending {
			return fmt.Sprintf("GET /api/workers/%s to show status paused, not pending (have status %q, pending %v)", pausedID, w.Status, w.Pending)
		}
		return ""
	})

	// The drained worker finishes its job, reports stopped and exits.
	waitFor(t, 5*time.Second, func() string {
		s := stateOf(fleet, drainedID)
		if s.Status != "stopped" || !s.Exited {
			return fmt.Sprintf("simulated %s to report stopped and exit (have %+v)", drainedID, s)
		}
		return ""
	})
	drained := api.worker(drainedID)
	if drained.Status != "stopped" {
		t.Errorf("GET /api/workers/%s: status %q, want stopped", drainedID, drained.Status)
	}
	if drained.DesiredState != "draining" {
		t.Errorf("GET /api/workers/%s: desired_state %q, want draining", drainedID, drained.DesiredState)
	}
	if drained.LastHeartbeatAt == nil {
		t.Fatalf("GET /api/workers/%s: last_heartbeat_at is null", drainedID)
	}

	// Over the next five heartbeat intervals the paused worker processes no
	// job while a running worker keeps working, and the drained worker sends
	// no heartbeat.
	pausedBefore := stateOf(fleet, pausedID).Processed
	runningBefore := stateOf(fleet, runningID).Processed
	time.Sleep(5 * e2eInterval)
	paused := stateOf(fleet, pausedID)
	if paused.Processed != pausedBefore {
		t.Errorf("paused worker %s processed %d jobs while paused", pausedID, paused.Processed-pausedBefore)
	}
	if paused.Status != "paused" {
		t.Errorf("paused worker %s now reports %q", pausedID, paused.Status)
	}
	if got := stateOf(fleet, runningID).Processed; got <= runningBefore {
		t.Errorf("running worker %s processed no job in %s (still %d)", runningID, 5*e2eInterval, got)
	}
	waitFor(t, 2*time.Second, func() string {
		w := api.worker(pausedID)
		if got := int64(w.Metrics["jobs_processed"]); got != paused.Processed {
			return fmt.Sprintf("GET /api/workers/%s to report jobs_processed %d (have %d)", pausedID, paused.Processed, got)
		}
		return ""
	})
	if w := api.worker(drainedID); w.LastHeartbeatAt == nil || !w.LastHeartbeatAt.Equal(*drained.LastHeartbeatAt) {
		t.Errorf("drained worker %s heartbeat after exiting: last_heartbeat_at %v, then %v", drainedID, drained.LastHeartbeatAt, w.LastHeartbeatAt)
	}

	// Without heartbeats the drained worker turns stale after the grace
	// period, and every other worker stays live.
	waitFor(t, e2eGrace+3*time.Second, func() string {
		if w := api.worker(drainedID); !w.Stale {
			return fmt.Sprintf("drained worker %s to turn stale", drainedID)
		}
		return ""
	})
	var live e2eWorkerList
	api.getJSON("/api/workers?stale=false", &live)
	if live.Total != e2eWorkers-1 {
		t.Errorf("GET /api/workers?stale=false: total %d, want %d", live.Total, e2eWorkers-1)
	}
	for _, w := range live.Workers {
		if w.ID == drainedID {
			t.Errorf("drained worker %s is still listed as live", drainedID)
		}
	}
}

// TestEndToEndMetricsAuth checks that /metrics requires the token and then
// serves the heartbeat counter.
func TestEndToEndMetricsAuth(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	app := startE2EServer(t, log)
	api := &e2eAPI{t: t, base: app.URL(), http: &http.Client{Timeout: 5 * time.Second}}

	status, header, body := api.do(http.MethodGet, "/metrics", "")
	if status != http.StatusUnauthorized {
		t.Errorf("GET /metrics without token: status %d, want 401; body %s", status, body)
	}
	if header.Get("WWW-Authenticate") == "" {
		t.Errorf("GET /metrics without token: no WWW-Authenticate header")
	}
	if status, _, _ := api.do(http.MethodGet, "/metrics", "wrong-token-0123456789"); status != http.StatusUnauthorized {
		t.Errorf("GET /metrics with a wrong token: status %d, want 401", status)
	}

	// One heartbeat, so the counter has a value to check.
	req, err := http.NewRequest(http.MethodPost, app.URL()+"/api/workers/heartbeat",
		strings.NewReader(`{"id":"w-metrics","pool":"billing","status":"running","metrics":{"jobs_processed":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := api.http.Do(req)
	if err != nil {
		t.Fatalf("POST heartbeat: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST heartbeat: status %d, want 200", res.StatusCode)
	}

	status, header, body = api.do(http.MethodGet, "/metrics", e2eToken)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics with token: status %d, want 200; body %s", status, body)
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want text/plain", ct)
	}
	if !strings.Contains(string(body), "\ncontrolplane_heartbeats_total 1\n") {
		t.Errorf("GET /metrics: no line %q in:\n%s", "controlplane_heartbeats_total 1", body)
	}
}
