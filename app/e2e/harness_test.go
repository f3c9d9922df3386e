package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/cli"
	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/testenv"
)

const (
	testToken = "e2e-dashboard-token-0123456789abcdef"
	uiPrefix  = "/verifier-engine-room"
	overview  = uiPrefix + "/overview"
	// heartbeatEvery is HEARTBEAT_INTERVAL_SECONDS in every test, and how
	// often the fake workers beat.
	heartbeatEvery = time.Second
	// hubTick is how long the event hub coalesces changes before it pushes
	// them (web.HubOptions.Tick, which cli.Start leaves at its default).
	hubTick = time.Second
	// defaultGrace is ALERT_HEARTBEAT_GRACE_SECONDS unless a test sets it.
	defaultGrace = 3 * time.Second
)

// basicAuth returns the Authorization header value that a browser sends
// after the login prompt: any username, the token as password.
func basicAuth(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+testToken))
}

// logBuffer collects the product's log lines and prints them only when the
// test fails, so a passing run stays readable.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// server is one control plane replica under test. It can be shut down and
// started again on the same address and Redis database, which is what a
// restart looks like to a browser.
type server struct {
	t    *testing.T
	env  map[string]string
	logs *logBuffer
	log  *slog.Logger
	app  *cli.App
	addr string // host:port, kept across restarts
	http *http.Client
}

// startServer starts the product on a free port of 127.0.0.1 on an empty
// Redis database. The entries of env override the test defaults. The server shuts
// down when the test ends, and its log is printed if the test failed.
func startServer(t *testing.T, env map[string]string) *server {
	t.Helper()
	redisAddr, db, _ := testenv.Redis(t)
	s := &server{
		t: t,
		env: map[string]string{
			"HTTP_ADDR":                     "127.0.0.1:0",
			"CONTROL_PLANE_TOKEN":           testToken,
			"REDIS_ADDR":                    redisAddr,
			"REDIS_DB":                      strconv.Itoa(db),
			"HEARTBEAT_INTERVAL_SECONDS":    strconv.Itoa(int(heartbeatEvery / time.Second)),
			"ALERT_HEARTBEAT_GRACE_SECONDS": strconv.Itoa(int(defaultGrace / time.Second)),
			"LOG_LEVEL":                     "info",
		},
		logs: &logBuffer{},
		http: &http.Client{Timeout: 5 * time.Second},
	}
	maps.Copy(s.env, env)
	s.log = slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s.app = s.startApp(s.env["HTTP_ADDR"])
	s.addr = s.app.Addr().String()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("control plane log:\n%s", s.logs.String())
		}
	})
	return s
}

// startApp starts one App with the server's environment on addr.
func (s *server) startApp(addr string) *cli.App {
	s.t.Helper()
	env := maps.Clone(s.env)
	env["HTTP_ADDR"] = addr
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		s.t.Fatalf("load config: %v", err)
	}
	app, err := cli.Start(cfg, s.log)
	if err != nil {
		s.t.Fatalf("start control plane on %s: %v", addr, err)
	}
	return app
}

// URL returns the base URL, which stays the same across Stop and Start.
func (s *server) URL() string { return "http://" + s.addr }

// App returns the running replica, which is a new one after every Start.
func (s *server) App() *cli.App {
	s.t.Helper()
	if s.app == nil {
		s.t.Fatal("the control plane is stopped")
	}
	return s.app
}

// Stop shuts the replica down, which ends every open event stream.
func (s *server) Stop() {
	if s.app == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s.app.Shutdown(ctx)
	s.app = nil
}

// Start starts the replica again on the address it had before.
func (s *server) Start() {
	s.t.Helper()
	if s.app != nil {
		s.t.Fatal("the control plane is already running")
	}
	s.app = s.startApp(s.addr)
}

// StartReplica starts a second replica on another port of the same Redis
// database, as a second instance behind a load balancer would run. The
// returned stop shuts it down, and it also runs when the test ends.
func (s *server) StartReplica() (app *cli.App, stop func()) {
	s.t.Helper()
	app = s.startApp("127.0.0.1:0")
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			app.Shutdown(ctx)
		})
	}
	s.t.Cleanup(stop)
	return app, stop
}

// request sends one request to base+path with the given headers and returns
// the status and body. A nil body sends none.
func (s *server) request(method, base, path string, body any, header http.Header) (int, []byte) {
	s.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// api calls the JSON API with the bearer token, as a script would.
func (s *server) api(method, path string, body any) (int, []byte) {
	s.t.Helper()
	return s.request(method, s.URL(), path, body, http.Header{"Authorization": {"Bearer " + testToken}})
}

// command sends a worker command through the API and fails unless it is
// accepted.
func (s *server) command(id, action string) {
	s.t.Helper()
	commandAt(s.t, s, s.URL(), id, action)
}

func commandAt(t *testing.T, s *server, base, id, action string) {
	t.Helper()
	status, body := s.request(http.MethodPost, base, "/api/workers/"+id+"/"+action, nil,
		http.Header{"Authorization": {"Bearer " + testToken}})
	if status != http.StatusOK {
		t.Fatalf("POST /api/workers/%s/%s on %s: status %d, body %s", id, action, base, status, body)
	}
}

// scale sets a pool's desired count through the API.
func (s *server) scale(pool string, n int) {
	s.t.Helper()
	status, body := s.api(http.MethodPost, "/api/pools/"+pool+"/scale", map[string]int{"desired_count": n})
	if status != http.StatusOK {
		s.t.Fatalf("scale pool %s to %d: status %d, body %s", pool, n, status, body)
	}
}

// apiWorker is the part of GET /api/workers/{id} that the tests read.
type apiWorker struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	DesiredState string `json:"desired_state"`
	Pending      bool   `json:"pending"`
	Stale        bool   `json:"stale"`
}

func (s *server) worker(id string) apiWorker {
	s.t.Helper()
	status, body := s.api(http.MethodGet, "/api/workers/"+id, nil)
	if status != http.StatusOK {
		s.t.Fatalf("GET /api/workers/%s: status %d, body %s", id, status, body)
	}
	var w apiWorker
	if err := json.Unmarshal(body, &w); err != nil {
		s.t.Fatalf("GET /api/workers/%s: decode %s: %v", id, body, err)
	}
	return w
}

// heartbeatBody is the JSON a worker posts.
type heartbeatBody struct {
	ID      string             `json:"id"`
	Pool    string             `json:"pool"`
	Status  string             `json:"status"`
	Host    string             `json:"host,omitempty"`
	Version string             `json:"version,omitempty"`
	Metrics map[string]float64 `json:"metrics"`
}

// heartbeat posts one heartbeat and returns the status code and the
// desired_state of the response ("" unless 200).
func (s *server) heartbeat(hb heartbeatBody) (int, string) {
	s.t.Helper()
	code, desired, err := postHeartbeat(s.http, s.URL(), hb)
	if err != nil {
		s.t.Fatalf("heartbeat %s: %v", hb.ID, err)
	}
	return code, desired
}

func postHeartbeat(client *http.Client, base string, hb heartbeatBody) (int, string, error) {
	b, err := json.Marshal(hb)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest(http.MethodPost, base+"/api/workers/heartbeat", bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var out struct {
		DesiredState string `json:"desired_state"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return resp.StatusCode, "", fmt.Errorf("decode %s: %w", body, err)
	}
	return resp.StatusCode, out.DesiredState, nil
}

// fakeWorker heartbeats every second with the status the test sets and
// obeys nothing. It records each desired_state it is sent and changes its
// status only through SetStatus.
type fakeWorker struct {
	t    *testing.T
	srv  *server
	http *http.Client

	mu        sync.Mutex
	hb        heartbeatBody
	responses []string  // desired_state of each accepted heartbeat, in order
	lastOK    time.Time // when the last accepted heartbeat returned
	lastErr   error

	loop sync.Mutex // held by Pause and Resume
	stop chan struct{}
	done chan struct{}
}

// startWorker starts a fake worker in pool that reports running until
// SetStatus changes it. Its first heartbeat is accepted before startWorker returns. It
// stops when the test ends.
func (s *server) startWorker(id, pool string) *fakeWorker {
	s.t.Helper()
	w := &fakeWorker{
		t:    s.t,
		srv:  s,
		http: &http.Client{Timeout: 2 * time.Second},
		hb: heartbeatBody{ID: id, Pool: pool, Status: "running",
			Metrics: map[string]float64{"jobs_processed": 1, "jobs_failed": 0}},
	}
	w.Resume()
	s.t.Cleanup(w.Pause)
	return w
}

// Resume sends a heartbeat at once, which must be accepted, and then one
// every second until Pause.
func (w *fakeWorker) Resume() {
	w.t.Helper()
	w.loop.Lock()
	defer w.loop.Unlock()
	if w.stop != nil {
		return // already beating
	}
	if !w.Beat() {
		w.t.Fatalf("heartbeat of %s failed: %v", w.hb.ID, w.Err())
	}
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go w.run(w.stop, w.done)
}

// Pause stops the heartbeats and waits until none is in flight.
func (w *fakeWorker) Pause() {
	w.loop.Lock()
	defer w.loop.Unlock()
	if w.stop == nil {
		return
	}
	close(w.stop)
	<-w.done
	w.stop, w.done = nil, nil
}

func (w *fakeWorker) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ticker := time.NewTicker(heartbeatEvery)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
			w.Beat()
		}
	}
}

// Beat sends one heartbeat now and reports whether it was accepted. While
// the server is down the error is kept for Err and the worker carries on.
func (w *fakeWorker) Beat() bool {
	w.mu.Lock()
	hb := w.hb
	hb.Metrics = maps.Clone(w.hb.Metrics)
	w.hb.Metrics["jobs_processed"]++ // jobs keep rising whatever the desired state
	w.mu.Unlock()

	_, desired, err := postHeartbeat(w.http, w.srv.URL(), hb)

	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastErr = err
	if err != nil {
		return false
	}
	w.responses = append(w.responses, desired)
	w.lastOK = time.Now()
	return true
}

// ID returns the worker's id.
func (w *fakeWorker) ID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hb.ID
}

// SetStatus changes the status that the following heartbeats report.
func (w *fakeWorker) SetStatus(status string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hb.Status = status
}

// SetMeta changes the host and version that the following heartbeats report.
func (w *fakeWorker) SetMeta(host, version string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hb.Host, w.hb.Version = host, version
}

// Responses returns the desired_state of every accepted heartbeat so far.
func (w *fakeWorker) Responses() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.responses...)
}

// LastDesired returns the desired_state of the last accepted heartbeat.
func (w *fakeWorker) LastDesired() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.responses) == 0 {
		return ""
	}
	return w.responses[len(w.responses)-1]
}

// LastOK returns when the last accepted heartbeat returned.
func (w *fakeWorker) LastOK() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastOK
}

// Err returns the error of the last heartbeat, or nil.
func (w *fakeWorker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
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

// workerIDs returns w-01, w-02, … w-n.
func workerIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("w-%02d", i+1)
	}
	return ids
}

// containsAll reports the first of want that s lacks, or "".
func containsAll(s string, want ...string) string {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return w
		}
	}
	return ""
}
