package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/cli"
	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// testToken is every replica's CONTROL_PLANE_TOKEN.
const testToken = "clustertest-token-0123456789abcdef"

// Timing of every replica: a worker turns stale after two silent seconds
// and the alert check runs each second, so an incident is notified within
// about three seconds of a worker's last heartbeat. Replicas also ask
// workers to heartbeat each second (HEARTBEAT_INTERVAL_SECONDS=1).
const (
	heartbeatGrace = 2 * time.Second
	checkInterval  = time.Second
)

// baseEnv returns the environment of a replica with alerts on, notifying the
// Slack webhook at slackURL, on the Redis that redisEnv names (REDIS_ADDR and
// any of REDIS_DB, REDIS_MASTER_NAME).
func baseEnv(redisEnv map[string]string, slackURL string) map[string]string {
	env := map[string]string{
		"HTTP_ADDR":                     "127.0.0.1:0",
		"CONTROL_PLANE_TOKEN":           testToken,
		"HEARTBEAT_INTERVAL_SECONDS":    "1",
		"ALERT_HEARTBEAT_GRACE_SECONDS": fmt.Sprint(int(heartbeatGrace / time.Second)),
		"ALERT_CHECK_INTERVAL_SECONDS":  fmt.Sprint(int(checkInterval / time.Second)),
		"ALERTS_ENABLED":                "true",
		"SLACK_WEBHOOK_URL":             slackURL,
	}
	for k, v := range redisEnv {
		env[k] = v
	}
	return env
}

// replica is one running control plane, shut down once: by the test or by
// its cleanup.
type replica struct {
	name string
	app  *cli.App
	api  *apiClient
	once sync.Once
}

// startReplica starts a control plane configured by env on a free port of
// 127.0.0.1. Its log lines at level and above go to the test output, tagged
// with name.
func startReplica(t *testing.T, name string, env map[string]string, level slog.Level) *replica {
	t.Helper()
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("replica %s: load config: %v", name, err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level})).With("replica", name)
	app, err := cli.Start(cfg, log)
	if err != nil {
		t.Fatalf("replica %s: start: %v", name, err)
	}
	r := &replica{name: name, app: app}
	t.Cleanup(func() { r.shutdown() })
	// Registered after the shutdown, this client's cleanup runs before it and
	// closes its idle connections, which would otherwise hold up the
	// server's graceful shutdown: fasthttp counts a connection that has not
	// sent its first request as active.
	r.api = newAPIClient(t, app.URL())
	return r
}

// shutdown stops the replica; calls after the first do nothing, because
// App.Shutdown may run only once.
func (r *replica) shutdown() {
	r.once.Do(func() { r.app.Shutdown(context.Background()) })
}

// apiClient calls one base URL with the bearer token. Its methods return
// errors instead of failing the test, so background goroutines can use them.
type apiClient struct {
	base string
	http *http.Client
}

func newAPIClient(t *testing.T, base string) *apiClient {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	return &apiClient{base: base, http: &http.Client{Timeout: 5 * time.Second, Transport: transport}}
}

// do sends one request with the bearer token and returns the status and the
// body.
func (a *apiClient) do(method, path, contentType string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequest(method, a.base+path, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := a.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// getJSON sends a GET, expects 200 and decodes the body into v.
func (a *apiClient) getJSON(path string, v any) error {
	status, body, err := a.do(http.MethodGet, path, "", nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: status %d, body %s", path, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decode %s: %w", path, body, err)
	}
	return nil
}

// postJSON sends a POST with v as its JSON body, expects 200 and returns
// the body.
func (a *apiClient) postJSON(path string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	status, body, err := a.do(http.MethodPost, path, "application/json", bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	if status != http.StatusOK {
		return body, fmt.Errorf("POST %s: status %d, body %s", path, status, body)
	}
	return body, nil
}

// heartbeat sends one heartbeat and returns the desired state from the
// response.
func (a *apiClient) heartbeat(id, pool, status string) (string, error) {
	body, err := a.postJSON("/api/workers/heartbeat", map[string]any{
		"id": id, "pool": pool, "status": status,
		"metrics": map[string]float64{"jobs_processed": 1, "jobs_failed": 0},
	})
	if err != nil {
		return "", err
	}
	var res struct {
		DesiredState string `json:"desired_state"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return "", fmt.Errorf("decode heartbeat response %s: %w", body, err)
	}
	return res.DesiredState, nil
}

// postSettings saves the Settings form with the bearer token, which needs
// no CSRF token, and expects 200.
func (a *apiClient) postSettings(form url.Values) error {
	status, body, err := a.do(http.MethodPost, "/verifier-engine-room/settings", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("POST settings: %w", err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("POST settings: status %d, body %s", status, body)
	}
	return nil
}

// workerJSON is the part of a worker in the API's JSON that the tests read.
type workerJSON struct {
	ID           string `json:"id"`
	Pool         string `json:"pool"`
	Status       string `json:"status"`
	DesiredState string `json:"desired_state"`
	Stale        bool   `json:"stale"`
}

type workerListJSON struct {
	Workers []workerJSON `json:"workers"`
	Total   int          `json:"total"`
}

type poolJSON struct {
	Pool         string `json:"pool"`
	DesiredCount *int   `json:"desired_count"`
	Live         int    `json:"live"`
}

type poolListJSON struct {
	Pools []poolJSON `json:"pools"`
}

// slackServer is a fake Slack incoming webhook that records the text of
// every message posted to it.
type slackServer struct {
	*httptest.Server
	mu    sync.Mutex
	texts []string
}

func startSlack(t *testing.T) *slackServer {
	t.Helper()
	s := &slackServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var msg struct {
			Text string `json:"text"`
		}
		_ = json.Unmarshal(b, &msg)
		s.mu.Lock()
		s.texts = append(s.texts, msg.Text+"\n"+string(b))
		s.mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}

// mentioning returns the number of messages whose body contains text.
func (s *slackServer) mentioning(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.texts {
		if strings.Contains(m, text) {
			n++
		}
	}
	return n
}

// all returns every message's fallback text and body.
func (s *slackServer) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.texts...)
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	Name string
	Data string
}

// eventStream reads one Server-Sent Events stream in the background.
type eventStream struct {
	events chan sseEvent
	// ended is closed when the server ends the stream or the read fails.
	ended chan struct{}
	// retry is the reconnection delay the server sent, or "".
	mu    sync.Mutex
	retry string
	err   error
	close func()
}

// openEvents opens the dashboard's event stream at base with the query,
// logged in by HTTP Basic as a browser is, and expects 200 with
// text/event-stream.
func openEvents(t *testing.T, base, query string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/verifier-engine-room/events?"+query, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.SetBasicAuth("operator", testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open event stream on %s: %v", base, err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		t.Fatalf("open event stream on %s: status %d, Content-Type %q, body %s", base, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	s := &eventStream{events: make(chan sseEvent, 1024), ended: make(chan struct{}), close: func() { cancel(); res.Body.Close() }}
	t.Cleanup(s.close)
	go s.read(res.Body)
	return s
}

// read parses the stream into events until it ends.
func (s *eventStream) read(body io.Reader) {
	defer close(s.ended)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Name != "" || len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				select {
				case s.events <- ev:
				default: // the test stopped reading; drop
				}
			}
			ev, data = sseEvent{}, nil
		case strings.HasPrefix(line, ":"):
			// A comment, such as a keep-alive.
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		case strings.HasPrefix(line, "retry: "):
			s.mu.Lock()
			s.retry = strings.TrimPrefix(line, "retry: ")
			s.mu.Unlock()
		}
	}
	s.mu.Lock()
	s.err = sc.Err()
	s.mu.Unlock()
}

// retryHint returns the reconnection delay the server sent, or "".
func (s *eventStream) retryHint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retry
}

// waitEvent returns the first event, from now on, for which match is true,
// or false when none comes within timeout or the stream ends.
func (s *eventStream) waitEvent(timeout time.Duration, match func(sseEvent) bool) (sseEvent, bool) {
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-s.events:
			if match(ev) {
				return ev, true
			}
		case <-s.ended:
			// Drain what was read before the end.
			for {
				select {
				case ev := <-s.events:
					if match(ev) {
						return ev, true
					}
				default:
					return sseEvent{}, false
				}
			}
		case <-deadline:
			return sseEvent{}, false
		}
	}
}

// drain discards the events received so far, such as a stream's initial
// state.
func (s *eventStream) drain() {
	for {
		select {
		case <-s.events:
		default:
			return
		}
	}
}

// waitFor polls cond every 50 ms until it returns "" or timeout passes, and
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

// keepAlive heartbeats each worker (id -> pool) through api every 500 ms
// until the test ends, so that only the workers a test silences on purpose
// turn stale. Like a real worker, each reports the desired state of its
// previous response as its status, so commands never stay pending.
func keepAlive(t *testing.T, api *apiClient, workers map[string]string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	status := make(map[string]string, len(workers))
	for id := range workers {
		status[id] = "running"
	}
	go func() {
		defer close(done)
		ticker := time.NewTicker(500 * time.Millisecond)
		defer ticker.Stop()
		for {
			for id, pool := range workers {
				if desired, err := api.heartbeat(id, pool, status[id]); err == nil {
					status[id] = desired
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}
