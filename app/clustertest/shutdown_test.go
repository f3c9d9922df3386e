package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/simulate"
	"github.com/verifier/controlplane/app/testenv"
)

// balancer is a round-robin reverse proxy with passive health checks. A
// request that cannot reach a backend, or gets 502, 503 or 504 from it, goes
// to the next backend, and the failed backend is skipped for a second.
type balancer struct {
	backends  []*url.URL
	transport *http.Transport
	next      atomic.Uint64
	retries   atomic.Int64

	mu        sync.Mutex
	downUntil map[int]time.Time
}

// startBalancer serves a balancer over backends on a free port of
// 127.0.0.1 until the test ends.
func startBalancer(t *testing.T, backends ...string) (*balancer, *httptest.Server) {
	t.Helper()
	b := &balancer{transport: http.DefaultTransport.(*http.Transport).Clone(), downUntil: map[int]time.Time{}}
	for _, raw := range backends {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		b.backends = append(b.backends, u)
	}
	proxy := &httputil.ReverseProxy{
		// RoundTrip picks the backend; the placeholder host is replaced.
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "backend"
		},
		Transport: b,
		// Event streams are flushed at once by content type; -1 does the
		// same for every response.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if !errors.Is(err, context.Canceled) {
				t.Logf("balancer: %s %s failed on every backend: %v", r.Method, r.URL.Path, err)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(func() {
		srv.Close()
		b.transport.CloseIdleConnections()
	})
	return b, srv
}

// RoundTrip implements http.RoundTripper: it tries the backends in
// round-robin order, healthy ones first, until one responds.
func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
	}
	n := len(b.backends)
	first := int(b.next.Add(1) % uint64(n))
	order := make([]int, 0, n)
	var down []int
	for i := range n {
		idx := (first + i) % n
		if b.isDown(idx) {
			down = append(down, idx)
		} else {
			order = append(order, idx)
		}
	}
	order = append(order, down...)

	var lastErr error
	for attempt, idx := range order {
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host, out.Host = b.backends[idx].Scheme, b.backends[idx].Host, b.backends[idx].Host
		out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		res, err := b.transport.RoundTrip(out)
		switch {
		case err != nil:
			lastErr = err
		case res.StatusCode == http.StatusBadGateway || res.StatusCode == http.StatusServiceUnavailable || res.StatusCode == http.StatusGatewayTimeout:
			if attempt == len(order)-1 {
				return res, nil // no backend is left to try, so pass this response on
			}
			res.Body.Close()
			lastErr = fmt.Errorf("backend %s returned %s", b.backends[idx].Host, res.Status)
		default:
			return res, nil
		}
		if req.Context().Err() != nil {
			return nil, lastErr
		}
		b.markDown(idx)
		b.retries.Add(1)
	}
	return nil, lastErr
}

func (b *balancer) isDown(idx int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Now().Before(b.downUntil[idx])
}

func (b *balancer) markDown(idx int) {
	b.mu.Lock()
	b.downUntil[idx] = time.Now().Add(time.Second)
	b.mu.Unlock()
}

// countingHandler counts the log records with one message and passes every
// record on.
type countingHandler struct {
	slog.Handler
	message string
	count   *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.message {
		h.count.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return countingHandler{Handler: h.Handler.WithAttrs(attrs), message: h.message, count: h.count}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{Handler: h.Handler.WithGroup(name), message: h.message, count: h.count}
}

// minUnreadyLead is the least time a replica that is shutting down must
// return 503 on /readyz while it still accepts connections, so that a load
// balancer polling /readyz about once a second takes it out of rotation
// before its connections are refused. Pollers in production are slower (a
// Kubernetes readinessProbe's periodSeconds defaults to 10), so a real
// deployment needs a longer lead; 1 s keeps this test short.
const minUnreadyLead = time.Second

// probe is one /readyz response: its status, or 0 when the request failed.
type probe struct {
	at     time.Time
	status int
	err    error
}

// pollReadyz polls url every 5 ms until stop is closed, and returns the
// responses in order.
func pollReadyz(url string, stop <-chan struct{}) <-chan []probe {
	out := make(chan []probe, 1)
	go func() {
		client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		var probes []probe
		for {
			select {
			case <-stop:
				out <- probes
				return
			default:
			}
			p := probe{at: time.Now()}
			res, err := client.Get(url)
			if err != nil {
				p.err = err
			} else {
				p.status = res.StatusCode
				res.Body.Close()
			}
			probes = append(probes, p)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return out
}

// TestShutdownUnderLoad runs twenty simulated workers against two replicas
// behind a round-robin balancer and shuts one replica down mid-run. The
// dying replica must turn unready before it stops accepting connections,
// and end its event streams so that a dashboard reconnects to the other
// replica. No worker may miss a heartbeat, turn stale or raise an alert.
func TestShutdownUnderLoad(t *testing.T) {
	addr, db, _ := testenv.Redis(t)
	slack := startSlack(t)
	env := baseEnv(map[string]string{"REDIS_ADDR": addr, "REDIS_DB": strconv.Itoa(db)}, slack.URL)
	// The replica keeps serving this long after /readyz turns unready.
	env["SHUTDOWN_DELAY_SECONDS"] = "2"
	dying := startReplica(t, "dying", env, slog.LevelInfo)
	survivor := startReplica(t, "survivor", env, slog.LevelWarn)
	lb, proxy := startBalancer(t, dying.app.URL(), survivor.app.URL())
	api := newAPIClient(t, proxy.URL)

	// The fleet heartbeats through the balancer every 200 ms.
	var heartbeatFailures atomic.Int64
	fleetLog := slog.New(countingHandler{
		Handler: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}).WithAttrs([]slog.Attr{slog.String("component", "fleet")}),
		message: "heartbeat failed", count: &heartbeatFailures,
	})
	const workers = 20
	fleet, err := simulate.NewFleet(simulate.Config{
		URL: proxy.URL, Token: testToken, Workers: workers, Pools: 2,
		Interval: 200 * time.Millisecond, FixedInterval: true, JobDuration: 20 * time.Millisecond,
		IDPrefix: "load", Seed: 1,
	}, fleetLog)
	if err != nil {
		t.Fatalf("build fleet: %v", err)
	}
	fleetCtx, stopFleet := context.WithCancel(context.Background())
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(fleetCtx) }()
	// Cleanups run in reverse order, so the fleet stops before the replicas.
	t.Cleanup(func() {
		stopFleet()
		select {
		case <-fleetDone:
		case <-time.After(10 * time.Second):
			t.Errorf("fleet did not stop within 10 s of its context ending")
		}
	})

	liveWorkers := func() string {
		var list workerListJSON
		if err := api.getJSON("/api/workers?stale=false&limit=100", &list); err != nil {
			return err.Error()
		}
		if list.Total != workers {
			return fmt.Sprintf("%d live workers in GET /api/workers (have %d)", workers, list.Total)
		}
		return ""
	}
	waitFor(t, 5*time.Second, liveWorkers)

	// A dashboard on the dying replica.
	stream := openEvents(t, dying.app.URL(), "view=overview")
	if _, ok := stream.waitEvent(2*time.Second, func(ev sseEvent) bool { return ev.Name == "workers" }); !ok {
		t.Fatalf("the dying replica's stream sent no initial workers table within 2 s")
	}

	// Shut the replica down under load while polling its /readyz.
	time.Sleep(time.Second)
	stopPolling := make(chan struct{})
	probes := pollReadyz(dying.app.URL()+"/readyz", stopPolling)
	time.Sleep(50 * time.Millisecond)
	started := time.Now()
	dying.shutdown()
	took := time.Since(started)
	close(stopPolling)
	t.Logf("the dying replica shut down in %s", took.Round(time.Millisecond))

	t.Run("readiness off first", func(t *testing.T) {
		ps := <-probes
		if len(ps) == 0 || ps[0].status != http.StatusOK {
			t.Fatalf("/readyz was not ready before the shutdown: first probes %v", ps[:min(len(ps), 3)])
		}
		var first503, firstRefused *probe
		for i := range ps {
			p := &ps[i]
			if p.status == http.StatusServiceUnavailable && first503 == nil {
				first503 = p
			}
			if p.err != nil && firstRefused == nil {
				firstRefused = p
			}
			if p.status != http.StatusOK && p.status != http.StatusServiceUnavailable && p.err == nil {
				t.Errorf("/readyz returned %d during shutdown", p.status)
			}
		}
		refused := "none before the shutdown returned"
		end := ps[len(ps)-1].at
		if firstRefused != nil {
			refused = fmt.Sprintf("%s after the shutdown began: %v", firstRefused.at.Sub(started).Round(time.Millisecond), firstRefused.err)
			end = firstRefused.at
		}
		if first503 == nil {
			t.Fatalf("/readyz never returned 503 in %d probes 5 ms apart during a shutdown of %s (first refused probe: %s)", len(ps), took.Round(time.Millisecond), refused)
		}
		if firstRefused != nil && firstRefused.at.Before(first503.at) {
			t.Fatalf("/readyz refused connections before it returned 503 (first refused probe: %s)", refused)
		}
		lead := end.Sub(first503.at)
		if lead < minUnreadyLead {
			t.Errorf("/readyz returned 503 for only %s before the replica stopped accepting connections (first refused probe: %s); a balancer that polls it every %s or less often never sees it turn unready",
				lead.Round(time.Millisecond), refused, minUnreadyLead)
		} else {
			t.Logf("/readyz returned 503 for %s before the replica stopped accepting connections", lead.Round(time.Millisecond))
		}
	})

	t.Run("event stream ends and reconnects", func(t *testing.T) {
		select {
		case <-stream.ended:
		case <-time.After(2 * time.Second):
			t.Fatalf("the dying replica's event stream did not end within 2 s of its shutdown")
		}
		if got := stream.retryHint(); got == "" {
			t.Errorf("the event stream sent no retry hint, so browsers reconnect after their own default delay")
		}
		again := openEvents(t, proxy.URL, "view=overview")
		if _, ok := again.waitEvent(2*time.Second, func(ev sseEvent) bool { return ev.Name == "workers" }); !ok {
			t.Fatalf("the reconnected stream sent no workers table within 2 s")
		}
		if n := survivor.app.Hub.Clients(); n != 1 {
			t.Errorf("the survivor serves %d event streams after the reconnect, want 1", n)
		}
	})

	// Longer than the grace period: a worker whose heartbeats were lost
	// would turn stale and raise an alert meanwhile.
	time.Sleep(heartbeatGrace + 2*checkInterval)

	t.Run("no heartbeat lost", func(t *testing.T) {
		// The balancer still sends a request to the dead replica each second,
		// fails, and retries it on the survivor.
		if n := lb.retries.Load(); n == 0 {
			t.Errorf("the balancer retried no request, so the workers never met the shut-down replica and failover went untested")
		} else {
			t.Logf("the balancer retried %d requests on the survivor", n)
		}
		if n := heartbeatFailures.Load(); n != 0 {
			t.Errorf("simulated workers logged %d failed heartbeats, want 0", n)
		}
		if msg := liveWorkers(); msg != "" {
			t.Errorf("after the shutdown: want %s", msg)
		}
		for _, s := range fleet.Snapshot() {
			if s.Exited {
				t.Errorf("simulated worker %s left the fleet: %+v", s.ID, s)
			}
		}
	})

	t.Run("no alert", func(t *testing.T) {
		if msgs := slack.all(); len(msgs) != 0 {
			t.Errorf("%d Slack messages during the shutdown, want 0: %q", len(msgs), msgs)
		}
		page, err := survivor.app.Alerts.PageData(context.Background())
		if err != nil {
			t.Fatalf("read alerts: %v", err)
		}
		for _, a := range append(page.Firing, page.Pending...) {
			t.Errorf("alert %s (%s) after the shutdown", a.Fingerprint, a.Status)
		}
	})
}
