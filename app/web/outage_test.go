package web_test

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	cpredis "github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/testenv"
)

const (
	// outagePoolSize and outageTimeout are REDIS_POOL_SIZE and
	// REDIS_TIMEOUT_MS of the outage tests.
	outagePoolSize = 10
	outageTimeout  = 500 * time.Millisecond
	// failFast is how long a heartbeat may take to get its 503 while Redis
	// is down or stalled, which is the Redis deadline plus room for a busy
	// machine.
	failFast = 1500 * time.Millisecond
)

// newOutageClient builds the client as app/cli/redis.go does for a
// standalone server, with a pool of outagePoolSize.
func newOutageClient(t *testing.T, addr string) *goredis.Client {
	t.Helper()
	rdb := goredis.NewClient(&goredis.Options{
		Addr:                  addr,
		PoolSize:              outagePoolSize,
		DialTimeout:           time.Second,
		ReadTimeout:           outageTimeout,
		WriteTimeout:          outageTimeout,
		PoolTimeout:           outageTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// newOutageHarness builds the server on a private redis-server that the
// test may stop, restart or pause.
func newOutageHarness(t *testing.T) (*harness, *testenv.RedisServer, *goredis.Client) {
	t.Helper()
	server := testenv.StartRedisServer(t)
	rdb := newOutageClient(t, server.Addr)
	clock := &fakeClock{now: time.Now().UTC()}
	h := buildHarness(t, rdb, clock, cpredis.Options{WorkerTTL: 24 * time.Hour, Timeout: outageTimeout})
	return h, server, rdb
}

// timedHeartbeat sends one heartbeat through the app and returns the
// response and how long it took.
func timedHeartbeat(h *harness, hb heartbeatBody) (response, time.Duration) {
	start := time.Now()
	res := h.post("/api/workers/heartbeat", hb.String())
	return res, time.Since(start)
}

// Heartbeats fail fast while Redis is down and recover when it returns
// empty.
func TestRedisOutageAndRecovery(t *testing.T) {
	h, server, _ := newOutageHarness(t)
	workers := []string{"w-01", "w-02", "w-03"}
	for _, id := range workers {
		h.heartbeat(plainHeartbeat(id, "billing", "running"))
	}
	if res := h.command("w-02", "pause"); res.status != http.StatusOK {
		t.Fatalf("pause w-02: status %d %s", res.status, res.body)
	}

	server.Stop()

	// Enough rounds for go-redis to count more failed dials than the pool
	// size, which stops it dialling until a background probe succeeds.
	for round := range 5 {
		for _, id := range workers {
			res, took := timedHeartbeat(h, plainHeartbeat(id, "billing", "running"))
			if res.status != http.StatusServiceUnavailable {
				t.Errorf("round %d, %s: status %d, want 503; body %s", round, id, res.status, res.body)
			}
			if res.header.Get("Retry-After") == "" {
				t.Errorf("round %d, %s: 503 without Retry-After", round, id)
			}
			if took > failFast {
				t.Errorf("round %d, %s: 503 after %v, want within %v", round, id, took, failFast)
			}
		}
	}
	var e errorReply
	res, _ := timedHeartbeat(h, plainHeartbeat("w-01", "billing", "running"))
	res.decode(t, &e)
	if e.Error.Code != "unavailable" || e.Error.Message == "" {
		t.Errorf("503 body = %s, want code unavailable and a message", res.body)
	}
	if strings.Contains(e.Error.Message, "127.0.0.1") || strings.Contains(e.Error.Message, "dial") {
		t.Errorf("503 message leaks the cause: %q", e.Error.Message)
	}

	ready := h.request(http.MethodGet, "/readyz", "", map[string]string{"Authorization": ""})
	if ready.status != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage: status %d, want 503", ready.status)
	}
	if list := h.get("/api/workers"); list.status != http.StatusServiceUnavailable {
		t.Errorf("GET /api/workers during the outage: status %d, want 503", list.status)
	}

	server.Start()
	recovered := time.Now()
	deadline := recovered.Add(testInterval)

	// Each worker sends its next heartbeat at once and, after a 503, again
	// every 100 ms, and all three must be accepted within one interval.
	// NOTE: go-redis stops dialling after PoolSize failed dials and probes
	// once a second, so the first heartbeats after recovery may still get 503.
	pending := map[string]bool{"w-01": true, "w-02": true, "w-03": true}
	for len(pending) > 0 {
		for _, id := range workers {
			if !pending[id] {
				continue
			}
			res, _ := timedHeartbeat(h, plainHeartbeat(id, "billing", "running"))
			if res.status != http.StatusOK {
				continue
			}
			delete(pending, id)
			var reply heartbeatReply
			res.decode(t, &reply)
			if reply.DesiredState != "running" {
				t.Errorf("%s: desired_state after recovery = %q, want running, the default for a lost desired state", id, reply.DesiredState)
			}
		}
		if len(pending) > 0 && time.Now().After(deadline) {
			t.Fatalf("workers %v still rejected %v after Redis came back", pending, testInterval)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("all three heartbeats accepted %v after Redis came back", time.Since(recovered))

	// The list, the pool and the active set are back by the same deadline.
	var list, pools response
	for {
		list, pools = h.get("/api/workers"), h.get("/api/pools")
		if list.status == http.StatusOK && pools.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after recovery: GET /api/workers %d %s, GET /api/pools %d %s", list.status, list.body, pools.status, pools.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var workerList workerListReply
	list.decode(t, &workerList)
	if got := ids(workerList); got != "w-01,w-02,w-03" {
		t.Errorf("workers after recovery = %s", got)
	}
	var poolList struct {
		Pools []poolReply `json:"pools"`
	}
	pools.decode(t, &poolList)
	if len(poolList.Pools) != 1 || poolList.Pools[0].Pool != "billing" || poolList.Pools[0].Live != 3 {
		t.Errorf("pools after recovery = %+v, want billing with 3 live", poolList.Pools)
	}

	admin := goredis.NewClient(&goredis.Options{Addr: server.Addr})
	defer admin.Close()
	if n := admin.ZCard(context.Background(), "workers:active").Val(); n != 3 {
		t.Errorf("workers:active has %d members, want 3", n)
	}
	if !admin.SIsMember(context.Background(), "pools:known", "billing").Val() {
		t.Error("billing is not in pools:known after recovery")
	}
	if ready := h.request(http.MethodGet, "/readyz", "", map[string]string{"Authorization": ""}); ready.status != http.StatusOK {
		t.Errorf("/readyz after recovery: status %d", ready.status)
	}
}

// busyGoroutines counts the goroutines that run go-redis or control-plane
// code. Idle fasthttp workers, which fasthttp keeps for a while after a burst
// of connections, are not counted.
func busyGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, stack := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(stack, "web_test.") {
			continue
		}
		if strings.Contains(stack, "github.com/redis/go-redis") || strings.Contains(stack, "github.com/verifier/controlplane/app/") {
			n++
		}
	}
	return n
}

// heartbeatResult is one heartbeat of a concurrent batch.
type heartbeatResult struct {
	id         string
	status     int
	retryAfter string
	took       time.Duration
	err        error
}

// sendBatch sends one heartbeat per id at once over HTTP and waits for all.
func sendBatch(client *http.Client, base string, ids []string) []heartbeatResult {
	results := make([]heartbeatResult, len(ids))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, id := range ids {
		wg.Go(func() {
			<-start
			began := time.Now()
			res := heartbeatResult{id: id}
			req, err := http.NewRequest(http.MethodPost, base+"/api/workers/heartbeat", strings.NewReader(plainHeartbeat(id, "batch", "running").String()))
			if err == nil {
				req.Header.Set("Authorization", "Bearer "+testToken)
				req.Header.Set("Content-Type", "application/json")
				var r *http.Response
				r, err = client.Do(req)
				if err == nil {
					res.status, res.retryAfter = r.StatusCode, r.Header.Get("Retry-After")
					r.Body.Close()
				}
			}
			res.err, res.took = err, time.Since(began)
			results[i] = res
		})
	}
	close(start)
	wg.Wait()
	return results
}

// A stalled Redis makes heartbeats fail fast, with no pile-up of goroutines
// or connections and no half-written worker.
func TestRedisStallFailsFast(t *testing.T) {
	h, server, rdb := newOutageHarness(t)
	base := startListener(t, h.app)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	admin := goredis.NewClient(&goredis.Options{Addr: server.Addr})
	t.Cleanup(func() { admin.Close() })
	ctx := context.Background()

	h.heartbeat(plainHeartbeat("w-warm", "batch", "running"))
	baseline := busyGoroutines()

	first := make([]string, 100)
	second := make([]string, 100)
	for i := range first {
		first[i] = fmt.Sprintf("stall-%03d", i)
		second[i] = fmt.Sprintf("after-%03d", i)
	}

	if err := admin.Do(ctx, "CLIENT", "PAUSE", "3000", "ALL").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	paused := time.Now()

	var maxConns atomic.Uint32
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := rdb.PoolStats().TotalConns; n > maxConns.Load() {
				maxConns.Store(n)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	results := sendBatch(client, base, first)
	close(stopSampling)
	<-sampled
	batchTook := time.Since(paused)

	for _, r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.id, r.err)
			continue
		}
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d during the stall, want 503", r.id, r.status)
		}
		if r.retryAfter == "" {
			t.Errorf("%s: 503 without Retry-After", r.id)
		}
		if r.took > failFast {
			t.Errorf("%s: answered after %v, want within %v", r.id, r.took, failFast)
		}
	}
	t.Logf("first batch done %v after the pause began; max pool connections %d", batchTook, maxConns.Load())
	if n := maxConns.Load(); n > outagePoolSize+1 {
		t.Errorf("pool had %d connections during the stall, want at most %d", n, outagePoolSize+1)
	}

	// Goroutines in Redis or control-plane code must end once the batch
	// has its responses, while Redis is still paused.
	deadline := time.Now().Add(time.Second)
	for busyGoroutines() > baseline && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := busyGoroutines(); n > baseline {
		t.Errorf("%d goroutines in Redis or control-plane code after the batch, %d before it", n, baseline)
	}

	if wait := 3*time.Second + 200*time.Millisecond - time.Since(paused); wait > 0 {
		time.Sleep(wait)
	}
	if err := admin.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatalf("CLIENT UNPAUSE: %v", err)
	}

	clients, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	// One line is the admin client itself.
	if n := strings.Count(strings.TrimSpace(clients), "\n") + 1; n > outagePoolSize+2 {
		t.Errorf("redis-server has %d client connections after the stall, want at most %d:\n%s", n, outagePoolSize+2, clients)
	}

	for _, r := range sendBatch(client, base, second) {
		if r.err != nil || r.status != http.StatusOK {
			t.Errorf("%s after the stall: status %d, err %v", r.id, r.status, r.err)
		}
	}

	// A heartbeat is one transaction, so each worker of the first batch has
	// all of its keys or none.
	written := 0
	for _, id := range first {
		parts := map[string]bool{
			"status":    admin.Exists(ctx, "worker:"+id+":status").Val() == 1,
			"heartbeat": admin.Exists(ctx, "worker:"+id+":heartbeat").Val() == 1,
			"meta":      admin.Exists(ctx, "worker:"+id+":meta").Val() == 1,
			"metrics":   admin.Exists(ctx, "worker:"+id+":metrics").Val() == 1,
			"active":    admin.ZScore(ctx, "workers:active", id).Err() == nil,
			"index":     admin.HExists(ctx, "workers:index", id).Val(),
		}
		all, none := true, true
		for _, present := range parts {
			all = all && present
			none = none && !present
		}
		if !all && !none {
			t.Errorf("%s is half-written: %v", id, parts)
		}
		if all {
			written++
		}
	}
	t.Logf("%d of %d heartbeats answered 503 were stored once Redis resumed", written, len(first))
	client.CloseIdleConnections()
}
