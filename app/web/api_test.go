package web_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/metrics"
	cpredis "github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/service"
	"github.com/verifier/controlplane/app/testenv"
	"github.com/verifier/controlplane/app/web"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	testToken    = "test-token-0123456789abcdef"
	testGrace    = 30 * time.Second
	testInterval = 5 * time.Second
	// testMaxPools is the default METRICS_MAX_POOLS.
	testMaxPools = 100
)

// fakeClock is a settable clock shared by the service of one harness.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// harness is the real server, wired as Start in app/cli/serve.go wires it
// but without the dashboard, on a Redis of the test's own.
type harness struct {
	t     *testing.T
	rdb   goredis.UniversalClient
	clock *fakeClock
	store *cpredis.Store
	svc   *service.Service
	srv   *web.Server
	app   *fiber.App
}

// newHarness builds the server on an empty Redis from testenv.Redis with a
// clock fixed at 2026-12-04 10:00 UTC.
func newHarness(t *testing.T) *harness {
	t.Helper()
	_, _, rdb := testenv.Redis(t)
	clock := &fakeClock{now: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	return buildHarness(t, rdb, clock, cpredis.Options{WorkerTTL: 24 * time.Hour, Timeout: 2 * time.Second})
}

// buildHarness wires a store, a service and a server on rdb. Calling it
// again on the same client is a restart of the control plane.
func buildHarness(t *testing.T, rdb goredis.UniversalClient, clock *fakeClock, opts cpredis.Options) *harness {
	t.Helper()
	store := cpredis.New(rdb, opts)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	settings := func() fleet.Settings {
		return fleet.Settings{
			CheckInterval:      15 * time.Second,
			HeartbeatGrace:     testGrace,
			Cooldown:           15 * time.Minute,
			ErrorRateThreshold: 10,
			MinJobs:            20,
			SnapshotInterval:   time.Minute,
		}
	}
	svc := service.New(store, settings, service.Options{HeartbeatInterval: testInterval, MaxDesiredCount: 1000}, m, clock.Now, log)
	reg.MustRegister(metrics.NewFleetCollector(svc.Pools, testMaxPools, 2*opts.Timeout))
	srv := web.New(web.Deps{
		Service: svc, Store: store, Metrics: m, Gatherer: reg, Token: testToken, Log: log,
		RetryAfter: int(testInterval / time.Second),
	})
	return &harness{t: t, rdb: rdb, clock: clock, store: store, svc: svc, srv: srv, app: srv.App()}
}

// with returns a copy of h that reports failures to t, for subtests.
func (h *harness) with(t *testing.T) *harness {
	copied := *h
	copied.t = t
	return &copied
}

// restart builds a new store, service and server on the same Redis.
func (h *harness) restart() {
	h.t.Helper()
	*h = *buildHarness(h.t, h.rdb, h.clock, cpredis.Options{WorkerTTL: 24 * time.Hour, Timeout: 2 * time.Second})
}

// response is the status, header and body of one HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode response %d %s: %v", r.status, r.body, err)
	}
}

// request sends one request through the Fiber app with the bearer token;
// header entries override the defaults, and an empty value removes one.
func (h *harness) request(method, path, body string, header map[string]string) response {
	h.t.Helper()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, reader)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := h.app.Test(req, -1)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatalf("read body of %s %s: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (h *harness) get(path string) response { return h.request(http.MethodGet, path, "", nil) }

func (h *harness) post(path, body string) response {
	return h.request(http.MethodPost, path, body, nil)
}

// heartbeatBody is a heartbeat as workers send it.
type heartbeatBody struct {
	ID      string             `json:"id"`
	Pool    string             `json:"pool"`
	Status  string             `json:"status"`
	Host    string             `json:"host,omitempty"`
	PID     int64              `json:"pid,omitempty"`
	SentAt  string             `json:"sent_at,omitempty"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

func (b heartbeatBody) String() string {
	out, _ := json.Marshal(b)
	return string(out)
}

// plainHeartbeat is the heartbeat of a worker that processed 1200 jobs.
func plainHeartbeat(id, pool, status string) heartbeatBody {
	return heartbeatBody{
		ID: id, Pool: pool, Status: status, Host: "host-" + id, PID: 4242,
		Metrics: map[string]float64{"jobs_processed": 1200, "jobs_failed": 12, "memory_mb": 256},
	}
}

type heartbeatReply struct {
	DesiredState             string `json:"desired_state"`
	HeartbeatIntervalSeconds int    `json:"heartbeat_interval_seconds"`
	ClockSkewWarning         bool   `json:"clock_skew_warning"`
}

// heartbeat sends hb and fails the test unless it is accepted.
func (h *harness) heartbeat(hb heartbeatBody) heartbeatReply {
	h.t.Helper()
	res := h.post("/api/workers/heartbeat", hb.String())
	if res.status != http.StatusOK {
		h.t.Fatalf("heartbeat of %s: status %d %s", hb.ID, res.status, res.body)
	}
	var reply heartbeatReply
	res.decode(h.t, &reply)
	return reply
}

type workerReply struct {
	ID               string             `json:"id"`
	Pool             string             `json:"pool"`
	Status           string             `json:"status"`
	DesiredState     string             `json:"desired_state"`
	Pending          bool               `json:"pending"`
	LastHeartbeatAt  *time.Time         `json:"last_heartbeat_at"`
	Stale            bool               `json:"stale"`
	Host             string             `json:"host"`
	ClockSkewWarning bool               `json:"clock_skew_warning"`
	Metrics          map[string]float64 `json:"metrics"`
}

type workerListReply struct {
	Workers    []workerReply `json:"workers"`
	Total      int           `json:"total"`
	Limit      int           `json:"limit"`
	Offset     int           `json:"offset"`
	NextOffset *int          `json:"next_offset"`
}

type poolReply struct {
	Pool         string         `json:"pool"`
	DesiredCount *int           `json:"desired_count"`
	Live         int            `json:"live"`
	ByStatus     map[string]int `json:"by_status"`
	Stale        int            `json:"stale"`
}

type errorReply struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func (h *harness) worker(id string) workerReply {
	h.t.Helper()
	res := h.get("/api/workers/" + id)
	if res.status != http.StatusOK {
		h.t.Fatalf("GET worker %s: status %d %s", id, res.status, res.body)
	}
	var w workerReply
	res.decode(h.t, &w)
	return w
}

func (h *harness) listWorkers(query string) workerListReply {
	h.t.Helper()
	res := h.get("/api/workers?" + query)
	if res.status != http.StatusOK {
		h.t.Fatalf("GET /api/workers?%s: status %d %s", query, res.status, res.body)
	}
	var list workerListReply
	res.decode(h.t, &list)
	return list
}

func (h *harness) pools() map[string]poolReply {
	h.t.Helper()
	res := h.get("/api/pools")
	if res.status != http.StatusOK {
		h.t.Fatalf("GET /api/pools: status %d %s", res.status, res.body)
	}
	var reply struct {
		Pools []poolReply `json:"pools"`
	}
	res.decode(h.t, &reply)
	out := make(map[string]poolReply, len(reply.Pools))
	for _, p := range reply.Pools {
		out[p.Pool] = p
	}
	return out
}

func (h *harness) command(id, action string) response {
	h.t.Helper()
	return h.post("/api/workers/"+id+"/"+action, "")
}

// snapshotKeys returns every key of the database with its type, whether it
// expires, and its value in a comparable form.
func snapshotKeys(t *testing.T, rdb goredis.UniversalClient) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		typ := rdb.Type(ctx, key).Val()
		var value any
		switch typ {
		case "string":
			value = rdb.Get(ctx, key).Val()
		case "hash":
			value = rdb.HGetAll(ctx, key).Val()
		case "set":
			members := rdb.SMembers(ctx, key).Val()
			sort.Strings(members)
			value = members
		case "zset":
			value = rdb.ZRangeWithScores(ctx, key, 0, -1).Val()
		case "list":
			value = rdb.LRange(ctx, key, 0, -1).Val()
		default:
			value = "unsupported type"
		}
		expires := rdb.TTL(ctx, key).Val() > 0
		out[key] = fmt.Sprintf("%s expires=%v %v", typ, expires, value)
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scan keys: %v", err)
	}
	return out
}

// diffKeys lists the keys that were added, removed or changed.
func diffKeys(before, after map[string]string) []string {
	var diff []string
	for k, v := range after {
		if old, ok := before[k]; !ok {
			diff = append(diff, "added "+k+" = "+v)
		} else if old != v {
			diff = append(diff, "changed "+k+": "+old+" -> "+v)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			diff = append(diff, "removed "+k)
		}
	}
	sort.Strings(diff)
	return diff
}

// badInput is one request that must be rejected with a 4xx.
type badInput struct {
	name        string
	method      string
	path        string
	body        string
	contentType string
	status      int
	field       string
	// form is a part of the message that states the accepted form.
	form string
	// overHTTP sends the request over a loopback connection, because
	// app.Test fails with an error of its own on a body over the limit.
	overHTTP bool
}

func heartbeatWith(mutate func(m map[string]any)) string {
	m := map[string]any{
		"id": "w-02", "pool": "billing", "status": "running",
		"metrics": map[string]any{"jobs_processed": 1200, "jobs_failed": 12, "memory_mb": 256},
	}
	mutate(m)
	b, _ := json.Marshal(m)
	return string(b)
}

func heartbeatRaw(field, rawJSON string) string {
	return `{"id":"w-02","pool":"billing","status":"running","metrics":{"jobs_processed":1},` + strconv.Quote(field) + `:` + rawJSON + `}`
}

func metricRaw(rawJSON string) string {
	return `{"id":"w-02","pool":"billing","status":"running","metrics":{"busy":` + rawJSON + `}}`
}

func badInputs() []badInput {
	const hb = "/api/workers/heartbeat"
	const scale = "/api/pools/billing/scale"
	const name = "[A-Za-z0-9._-]{1,128}"
	const statuses = "running, paused, draining, stopped"
	const count = "from 0 to 1000"
	const actions = "pause, resume, drain, stop"
	long := strings.Repeat("a", 129)
	tooLarge := heartbeatWith(func(m map[string]any) { m["host"] = strings.Repeat("h", web.BodyLimit) })
	manyMetrics := map[string]any{}
	for i := range fleet.MaxMetrics + 1 {
		manyMetrics[fmt.Sprintf("m_%d", i)] = i
	}

	rows := []badInput{
		// Bodies that are not a heartbeat object.
		{name: "malformed JSON", path: hb, body: `{"id":"w-02",`, field: "body", form: "JSON"},
		{name: "trailing garbage", path: hb, body: heartbeatWith(func(map[string]any) {}) + "x", field: "body", form: "JSON"},
		{name: "empty body", path: hb, body: "", field: "body", form: "JSON object"},
		{name: "array body", path: hb, body: `[]`, field: "body", form: "JSON object"},
		{name: "array of heartbeats", path: hb, body: "[" + heartbeatWith(func(map[string]any) {}) + "]", field: "body", form: "JSON object"},
		{name: "string body", path: hb, body: `"w-02"`, field: "body", form: "JSON object"},
		{name: "body over the limit", path: hb, body: tooLarge, status: http.StatusRequestEntityTooLarge, field: "body", form: strconv.Itoa(web.BodyLimit), overHTTP: true},
		{name: "scale body over the limit", path: scale, body: `{"desired_count":3,"pad":"` + strings.Repeat("p", web.BodyLimit) + `"}`, status: http.StatusRequestEntityTooLarge, field: "body", form: strconv.Itoa(web.BodyLimit), overHTTP: true},

		// Fields of the wrong type.
		{name: "status as number", path: hb, body: heartbeatRaw("status", "1"), field: "status", form: "string"},
		{name: "id as number", path: hb, body: `{"id":2,"pool":"billing","status":"running"}`, field: "id", form: "string"},
		{name: "pid as string", path: hb, body: heartbeatRaw("pid", `"4242"`), field: "pid", form: "whole number"},
		{name: "pid fractional", path: hb, body: heartbeatRaw("pid", `42.5`), field: "pid", form: "whole number"},
		{name: "pid negative", path: hb, body: heartbeatRaw("pid", `-1`), field: "pid", form: "from 0 to"},
		{name: "metrics as array", path: hb, body: `{"id":"w-02","pool":"billing","status":"running","metrics":[1,2]}`, field: "metrics", form: "object"},
		{name: "metrics as number", path: hb, body: `{"id":"w-02","pool":"billing","status":"running","metrics":5}`, field: "metrics", form: "object"},
		{name: "metric as string", path: hb, body: metricRaw(`"3"`), field: "metrics.busy", form: "number"},
		{name: "metric as object", path: hb, body: metricRaw(`{"value":3}`), field: "metrics.busy", form: "number"},
		{name: "metric as null", path: hb, body: metricRaw(`null`), field: "metrics.busy", form: "number"},
		{name: "metric as boolean", path: hb, body: metricRaw(`true`), field: "metrics.busy", form: "number"},
		{name: "metric as array", path: hb, body: metricRaw(`[1]`), field: "metrics.busy", form: "number"},
		{name: "metric too large", path: hb, body: metricRaw(`1e16`), field: "metrics.busy", form: "1e15"},
		{name: "too many metrics", path: hb, body: heartbeatWith(func(m map[string]any) { m["metrics"] = manyMetrics }), field: "metrics", form: "at most 64"},
		{name: "bad metric name", path: hb, body: heartbeatWith(func(m map[string]any) { m["metrics"] = map[string]any{"queue depth": 1} }), field: "metrics.queue depth", form: "[A-Za-z_]"},
		{name: "fractional counter", path: hb, body: heartbeatWith(func(m map[string]any) { m["metrics"] = map[string]any{"jobs_failed": 1.5} }), field: "metrics.jobs_failed", form: "whole number"},

		// Names outside [A-Za-z0-9._-]{1,128}.
		{name: "missing id", path: hb, body: heartbeatWith(func(m map[string]any) { delete(m, "id") }), field: "id", form: name},
		{name: "empty id", path: hb, body: heartbeatWith(func(m map[string]any) { m["id"] = "" }), field: "id", form: name},
		{name: "id of 129", path: hb, body: heartbeatWith(func(m map[string]any) { m["id"] = long }), field: "id", form: name},
		{name: "id with space", path: hb, body: heartbeatWith(func(m map[string]any) { m["id"] = "w 02" }), field: "id", form: name},
		{name: "id with slash", path: hb, body: heartbeatWith(func(m map[string]any) { m["id"] = "w/02" }), field: "id", form: name},
		{name: "id with unicode", path: hb, body: heartbeatWith(func(m map[string]any) { m["id"] = "wörker" }), field: "id", form: name},
		{name: "id with markup", path: hb, body: heartbeatWith(func(m map[string]any) { m["id"] = "<script>alert(1)</script>" }), field: "id", form: name},
		{name: "id with colon", path: hb, body: heartbeatWith(func(m map[string]any) { m["id"] = "w:02" }), field: "id", form: name},
		{name: "missing pool", path: hb, body: heartbeatWith(func(m map[string]any) { delete(m, "pool") }), field: "pool", form: name},
		{name: "pool of 129", path: hb, body: heartbeatWith(func(m map[string]any) { m["pool"] = long }), field: "pool", form: name},
		{name: "pool with space", path: hb, body: heartbeatWith(func(m map[string]any) { m["pool"] = "bill ing" }), field: "pool", form: name},
		{name: "pool with slash", path: hb, body: heartbeatWith(func(m map[string]any) { m["pool"] = "a/b" }), field: "pool", form: name},
		{name: "pool with unicode", path: hb, body: heartbeatWith(func(m map[string]any) { m["pool"] = "café" }), field: "pool", form: name},
		{name: "pool with markup", path: hb, body: heartbeatWith(func(m map[string]any) { m["pool"] = "<script>" }), field: "pool", form: name},

		// Other heartbeat fields.
		{name: "unknown status", path: hb, body: heartbeatWith(func(m map[string]any) { m["status"] = "offline" }), field: "status", form: statuses},
		{name: "missing status", path: hb, body: heartbeatWith(func(m map[string]any) { delete(m, "status") }), field: "status", form: statuses},
		{name: "host with escape", path: hb, body: heartbeatWith(func(m map[string]any) { m["host"] = "host\x1b[2J" }), field: "host", form: "control characters"},
		{name: "version too long", path: hb, body: heartbeatWith(func(m map[string]any) { m["version"] = strings.Repeat("v", 65) }), field: "version", form: "at most 64"},
		{name: "zone-less sent_at", path: hb, body: heartbeatWith(func(m map[string]any) { m["sent_at"] = "2026-12-04T10:00:00" }), field: "sent_at", form: "offset"},
		{name: "sent_at not a time", path: hb, body: heartbeatWith(func(m map[string]any) { m["sent_at"] = "yesterday" }), field: "sent_at", form: "RFC 3339"},
		{name: "sent_at as number", path: hb, body: heartbeatRaw("sent_at", "1796378400"), field: "sent_at", form: "string"},
		{name: "zone-less started_at", path: hb, body: heartbeatWith(func(m map[string]any) { m["started_at"] = "2026-12-04 10:00:00" }), field: "started_at", form: "RFC 3339"},

		// Scale requests.
		{name: "scale negative", path: scale, body: `{"desired_count":-1}`, field: "desired_count", form: count},
		{name: "scale over max", path: scale, body: `{"desired_count":1001}`, field: "desired_count", form: count},
		{name: "scale huge", path: scale, body: `{"desired_count":99999999999999999999}`, field: "desired_count", form: count},
		{name: "scale exponent", path: scale, body: `{"desired_count":1e9}`, field: "desired_count", form: count},
		{name: "scale fractional", path: scale, body: `{"desired_count":2.5}`, field: "desired_count", form: count},
		{name: "scale numeric string", path: scale, body: `{"desired_count":"3"}`, field: "desired_count", form: count},
		{name: "scale word", path: scale, body: `{"desired_count":"three"}`, field: "desired_count", form: count},
		{name: "scale boolean", path: scale, body: `{"desired_count":true}`, field: "desired_count", form: "whole number"},
		{name: "scale missing count", path: scale, body: `{}`, field: "desired_count", form: count},
		{name: "scale null count", path: scale, body: `{"desired_count":null}`, field: "desired_count", form: count},
		{name: "scale malformed", path: scale, body: `{"desired_count":`, field: "body", form: "JSON"},
		{name: "scale array body", path: scale, body: `[3]`, field: "body", form: "JSON object"},
		{name: "scale form word", path: scale, body: "desired_count=abc", contentType: "application/x-www-form-urlencoded", field: "desired_count", form: count},
		{name: "scale empty form", path: scale, body: "", contentType: "application/x-www-form-urlencoded", field: "desired_count", form: count},
		{name: "scale bad pool", path: "/api/pools/" + url.PathEscape("<script>") + "/scale", body: `{"desired_count":3}`, field: "pool", form: name},
		{name: "scale pool of 129", path: "/api/pools/" + long + "/scale", body: `{"desired_count":3}`, field: "pool", form: name},
		{name: "scale pool unicode", path: "/api/pools/" + url.PathEscape("café") + "/scale", body: `{"desired_count":3}`, field: "pool", form: name},

		// Commands.
		{name: "unknown worker action", path: "/api/workers/w-01/explode", field: "action", form: actions},
		{name: "unknown pool action", path: "/api/pools/billing/explode", field: "action", form: actions},
		{name: "command on bad id", path: "/api/workers/" + url.PathEscape("w 01") + "/pause", field: "id", form: name},
		{name: "command on long id", path: "/api/workers/" + long + "/pause", field: "id", form: name},
		{name: "command malformed body", path: "/api/workers/w-01/pause", body: `{"reason":`, field: "body", form: "JSON"},
		{name: "command reason too long", path: "/api/workers/w-01/pause", body: `{"reason":"` + strings.Repeat("r", 501) + `"}`, field: "reason", form: "at most 500"},
		{name: "pool command bad pool", path: "/api/pools/" + url.PathEscape("a b") + "/drain", field: "pool", form: name},

		// Reads with bad names.
		{name: "get worker long id", method: http.MethodGet, path: "/api/workers/" + long, field: "id", form: name},
		{name: "get worker markup id", method: http.MethodGet, path: "/api/workers/" + url.PathEscape("<b>"), field: "id", form: name},
		{name: "get pool bad name", method: http.MethodGet, path: "/api/pools/" + url.PathEscape("a b"), field: "pool", form: name},
	}

	// List filters.
	const limitForm = "from 1 to 1000"
	for _, q := range []struct{ name, query, field, form string }{
		{"limit zero", "limit=0", "limit", limitForm},
		{"limit over max", "limit=1001", "limit", limitForm},
		{"limit negative", "limit=-1", "limit", limitForm},
		{"limit word", "limit=ten", "limit", limitForm},
		{"limit huge", "limit=99999999999", "limit", limitForm},
		{"offset negative", "offset=-1", "offset", ">= 0"},
		{"offset word", "offset=abc", "offset", ">= 0"},
		{"sort unknown", "sort=name", "sort", "id, pool, status, heartbeat, host"},
		{"sort double minus", "sort=--id", "sort", "id, pool, status, heartbeat, host"},
		{"status unknown", "status=busy", "status", "running, paused, draining, stopped, offline"},
		{"stale maybe", "stale=maybe", "stale", "true or false"},
		{"pool filter bad", "pool=" + url.QueryEscape("a b"), "pool", name},
		{"query too long", "q=" + strings.Repeat("q", 256), "q", "255"},
	} {
		rows = append(rows, badInput{name: "list " + q.name, method: http.MethodGet, path: "/api/workers?" + q.query, field: q.field, form: q.form})
	}
	return rows
}

func TestBadInputRejectedWithoutWrites(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))
	base := startListener(t, h.app)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	before := snapshotKeys(t, h.rdb)

	for _, tt := range badInputs() {
		t.Run(tt.name, func(t *testing.T) {
			h := h.with(t)
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			header := map[string]string{}
			if tt.contentType != "" {
				header["Content-Type"] = tt.contentType
			}
			var res response
			if tt.overHTTP {
				res = sendHTTP(t, client, method, base+tt.path, tt.body)
			} else {
				res = h.request(method, tt.path, tt.body, header)
			}

			want := tt.status
			if want == 0 {
				want = http.StatusBadRequest
			}
			if res.status != want {
				t.Errorf("status = %d, want %d; body %s", res.status, want, res.body)
			}
			var e errorReply
			if err := json.Unmarshal(res.body, &e); err != nil {
				t.Fatalf("body is not the JSON error shape: %v: %s", err, res.body)
			}
			if e.Error.Code == "" {
				t.Errorf("error.code is empty: %s", res.body)
			}
			if e.Error.Field != tt.field {
				t.Errorf("error.field = %q, want %q; message %q", e.Error.Field, tt.field, e.Error.Message)
			}
			if !strings.Contains(e.Error.Message, tt.form) {
				t.Errorf("error.message = %q, want it to state the accepted form %q", e.Error.Message, tt.form)
			}
			if strings.Contains(string(res.body), "<script") {
				t.Errorf("error body echoes markup unescaped: %s", res.body)
			}
			if len(res.body) > 2048 {
				t.Errorf("error body is %d bytes; a bad value must not be echoed in full", len(res.body))
			}

			if diff := diffKeys(before, snapshotKeys(t, h.rdb)); len(diff) > 0 {
				t.Errorf("a rejected request changed Redis:\n%s", strings.Join(diff, "\n"))
				before = snapshotKeys(t, h.rdb)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}

	tests := []struct {
		name          string
		path          string
		authorization string
		status        int
	}{
		{"no header", "/api/workers", "", http.StatusUnauthorized},
		{"wrong bearer", "/api/workers", "Bearer wrong-token-0123456789", http.StatusUnauthorized},
		{"bearer prefix of token", "/api/workers", "Bearer " + testToken[:10], http.StatusUnauthorized},
		{"bearer token plus suffix", "/api/workers", "Bearer " + testToken + "x", http.StatusUnauthorized},
		{"empty bearer", "/api/workers", "Bearer ", http.StatusUnauthorized},
		{"token without scheme", "/api/workers", testToken, http.StatusUnauthorized},
		{"right bearer", "/api/workers", "Bearer " + testToken, http.StatusOK},
		{"lower-case scheme", "/api/workers", "bearer " + testToken, http.StatusOK},
		{"basic any user", "/api/workers", basic("alice", testToken), http.StatusOK},
		{"basic empty user", "/api/workers", basic("", testToken), http.StatusOK},
		{"basic wrong password", "/api/workers", basic("alice", "wrong"), http.StatusUnauthorized},
		{"basic token as user", "/api/workers", basic(testToken, ""), http.StatusUnauthorized},
		{"basic not base64", "/api/workers", "Basic !!!", http.StatusUnauthorized},
		{"heartbeat without token", "/api/workers/heartbeat", "", http.StatusUnauthorized},
		{"pools without token", "/api/pools", "", http.StatusUnauthorized},
		{"unknown api path without token", "/api/nothing", "", http.StatusUnauthorized},
		{"metrics without token", "/metrics", "", http.StatusUnauthorized},
		{"metrics wrong token", "/metrics", "Bearer nope", http.StatusUnauthorized},
		{"metrics with token", "/metrics", "Bearer " + testToken, http.StatusOK},
		{"metrics with basic", "/metrics", basic("prometheus", testToken), http.StatusOK},
		{"healthz without token", "/healthz", "", http.StatusOK},
		{"readyz without token", "/readyz", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := h.with(t)
			method := http.MethodGet
			body := ""
			if strings.HasSuffix(tt.path, "/heartbeat") {
				method, body = http.MethodPost, plainHeartbeat("w-01", "billing", "running").String()
			}
			res := h.request(method, tt.path, body, map[string]string{"Authorization": tt.authorization})
			if res.status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", res.status, tt.status, res.body)
			}
			if tt.status != http.StatusUnauthorized {
				return
			}
			if got := res.header.Get("WWW-Authenticate"); got == "" {
				t.Error("401 without WWW-Authenticate")
			}
			var e errorReply
			res.decode(t, &e)
			if e.Error.Code != fleet.EUNAUTH {
				t.Errorf("error.code = %q, want %q", e.Error.Code, fleet.EUNAUTH)
			}
			if !strings.Contains(e.Error.Message, "Bearer") {
				t.Errorf("error.message = %q, want it to say how to authenticate", e.Error.Message)
			}
			if strings.Contains(string(res.body), testToken) {
				t.Error("401 body contains the token")
			}
		})
	}
}

func TestProbesRevealNothing(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		res := h.request(http.MethodGet, path, "", map[string]string{"Authorization": ""})
		if res.status != http.StatusOK {
			t.Errorf("%s status = %d", path, res.status)
		}
		var body map[string]any
		res.decode(t, &body)
		if len(body) != 1 {
			t.Errorf("%s body = %s, want only a status", path, res.body)
		}
	}
}

func TestUnknownWorkerNotFound(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))
	before := snapshotKeys(t, h.rdb)

	requests := []struct{ method, path string }{
		{http.MethodGet, "/api/workers/w-404"},
		{http.MethodPost, "/api/workers/w-404/pause"},
		{http.MethodPost, "/api/workers/w-404/resume"},
		{http.MethodPost, "/api/workers/w-404/drain"},
		{http.MethodPost, "/api/workers/w-404/stop"},
		{http.MethodGet, "/api/pools/nowhere"},
		{http.MethodPost, "/api/pools/nowhere/drain"},
	}
	for _, r := range requests {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			h := h.with(t)
			res := h.request(r.method, r.path, "", nil)
			if res.status != http.StatusNotFound {
				t.Fatalf("status = %d, want 404; body %s", res.status, res.body)
			}
			var e errorReply
			res.decode(t, &e)
			if e.Error.Code != fleet.ENOTFOUND {
				t.Errorf("error.code = %q, want %q", e.Error.Code, fleet.ENOTFOUND)
			}
			if e.Error.Message == "" {
				t.Error("error.message is empty")
			}
		})
	}
	if diff := diffKeys(before, snapshotKeys(t, h.rdb)); len(diff) > 0 {
		t.Errorf("commands on an unknown worker changed Redis:\n%s", strings.Join(diff, "\n"))
	}
}

func TestCommandConflicts(t *testing.T) {
	tests := []struct {
		name string
		// setup are the commands that bring the worker to the state under
		// test; each must succeed.
		setup  []string
		status string
		action string
		reason string
	}{
		{"pause when paused", []string{"pause"}, "paused", "pause", "already paused"},
		{"resume when running", nil, "running", "resume", "already running"},
		{"drain when draining", []string{"drain"}, "running", "drain", "already draining"},
		{"stop when stopped", []string{"stop"}, "stopped", "stop", "already told to stop"},
		{"resume after reported stop", nil, "stopped", "resume", "already running"},
		{"pause after reported stop", nil, "stopped", "pause", "has stopped"},
		{"drain paused worker that stopped", []string{"pause"}, "stopped", "drain", "has stopped"},
		{"pause when draining", []string{"drain"}, "draining", "pause", "draining"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.heartbeat(plainHeartbeat("w-01", "billing", "running"))
			for _, action := range tt.setup {
				if res := h.command("w-01", action); res.status != http.StatusOK {
					t.Fatalf("setup %s: status %d %s", action, res.status, res.body)
				}
			}
			h.heartbeat(plainHeartbeat("w-01", "billing", tt.status))
			before := snapshotKeys(t, h.rdb)

			res := h.command("w-01", tt.action)
			if res.status != http.StatusConflict {
				t.Fatalf("status = %d, want 409; body %s", res.status, res.body)
			}
			var e errorReply
			res.decode(t, &e)
			if e.Error.Code != fleet.ECONFLICT {
				t.Errorf("error.code = %q, want %q", e.Error.Code, fleet.ECONFLICT)
			}
			if !strings.Contains(e.Error.Message, tt.reason) {
				t.Errorf("error.message = %q, want the reason %q", e.Error.Message, tt.reason)
			}
			if diff := diffKeys(before, snapshotKeys(t, h.rdb)); len(diff) > 0 {
				t.Errorf("a rejected command changed Redis:\n%s", strings.Join(diff, "\n"))
			}
		})
	}
}

func TestCommandChangesDesiredState(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))

	steps := []struct{ action, desired string }{
		{"pause", "paused"},
		{"resume", "running"},
		{"drain", "draining"},
		{"resume", "running"},
		{"stop", "stopped"},
	}
	for _, step := range steps {
		res := h.command("w-01", step.action)
		if res.status != http.StatusOK {
			t.Fatalf("%s: status %d %s", step.action, res.status, res.body)
		}
		var w workerReply
		res.decode(t, &w)
		if w.DesiredState != step.desired {
			t.Errorf("%s: desired_state in the reply = %q, want %q", step.action, w.DesiredState, step.desired)
		}
		// The worker reports running throughout, so only a change away from
		// running is pending.
		if wantPending := step.desired != "running"; w.Pending != wantPending {
			t.Errorf("%s: pending = %v, want %v", step.action, w.Pending, wantPending)
		}
		if got := h.heartbeat(plainHeartbeat("w-01", "billing", "running")).DesiredState; got != step.desired {
			t.Errorf("%s: heartbeat got desired_state %q, want %q", step.action, got, step.desired)
		}
	}
}

// seedListWorkers heartbeats six workers at known times, so that w-06 goes
// stale and the others stay live.
func seedListWorkers(h *harness) {
	h.heartbeat(heartbeatBody{ID: "w-06", Pool: "billing", Status: "running", Host: "gamma-6"})
	h.clock.Advance(testGrace + time.Second)
	h.heartbeat(heartbeatBody{ID: "w-01", Pool: "billing", Status: "running", Host: "alpha-1"})
	h.heartbeat(heartbeatBody{ID: "w-03", Pool: "email", Status: "running", Host: "alpha-3"})
	h.clock.Advance(time.Second)
	h.heartbeat(heartbeatBody{ID: "w-02", Pool: "billing", Status: "paused", Host: "beta-2"})
	h.heartbeat(heartbeatBody{ID: "w-04", Pool: "email", Status: "draining", Host: "beta-4"})
	h.heartbeat(heartbeatBody{ID: "w-05", Pool: "billing", Status: "stopped", Host: "Alpha-5"})
}

func ids(list workerListReply) string {
	out := make([]string, 0, len(list.Workers))
	for _, w := range list.Workers {
		out = append(out, w.ID)
	}
	return strings.Join(out, ",")
}

func TestListWorkersFilters(t *testing.T) {
	h := newHarness(t)
	seedListWorkers(h)

	tests := []struct{ query, want string }{
		{"", "w-01,w-02,w-03,w-04,w-05,w-06"},
		{"pool=billing", "w-01,w-02,w-05,w-06"},
		{"pool=email", "w-03,w-04"},
		{"pool=nowhere", ""},
		{"status=running", "w-01,w-03"},
		{"status=paused", "w-02"},
		{"status=draining", "w-04"},
		{"status=stopped", "w-05"},
		{"status=offline", "w-06"},
		{"stale=true", "w-06"},
		{"stale=false", "w-01,w-02,w-03,w-04,w-05"},
		{"pool=billing&status=running", "w-01"},
		{"q=alpha", "w-01,w-03,w-05"},
		{"q=ALPHA", "w-01,w-03,w-05"},
		{"q=w-0", "w-01,w-02,w-03,w-04,w-05,w-06"},
		{"q=-4", "w-04"},
		{"q=gamma&stale=true", "w-06"},
		{"q=nothing", ""},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			h := h.with(t)
			list := h.listWorkers(tt.query)
			if got := ids(list); got != tt.want {
				t.Errorf("ids = %s, want %s", got, tt.want)
			}
			if list.Total != len(list.Workers) {
				t.Errorf("total = %d, want %d", list.Total, len(list.Workers))
			}
		})
	}
}

func TestListWorkersSort(t *testing.T) {
	h := newHarness(t)
	seedListWorkers(h)

	tests := []struct{ sort, want string }{
		{"id", "w-01,w-02,w-03,w-04,w-05,w-06"},
		{"-id", "w-06,w-05,w-04,w-03,w-02,w-01"},
		{"pool", "w-01,w-02,w-05,w-06,w-03,w-04"},
		{"-pool", "w-03,w-04,w-01,w-02,w-05,w-06"},
		{"status", "w-04,w-02,w-01,w-03,w-06,w-05"},
		{"-status", "w-05,w-01,w-03,w-06,w-02,w-04"},
		{"heartbeat", "w-06,w-01,w-03,w-02,w-04,w-05"},
		{"-heartbeat", "w-02,w-04,w-05,w-01,w-03,w-06"},
		{"host", "w-05,w-01,w-03,w-02,w-04,w-06"},
		{"-host", "w-06,w-04,w-02,w-03,w-01,w-05"},
	}
	for _, tt := range tests {
		t.Run(tt.sort, func(t *testing.T) {
			h := h.with(t)
			if got := ids(h.listWorkers("sort=" + tt.sort)); got != tt.want {
				t.Errorf("ids = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestListWorkersShape(t *testing.T) {
	h := newHarness(t)
	seedListWorkers(h)

	res := h.get("/api/workers?pool=email")
	if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	var raw struct {
		Workers []map[string]json.RawMessage `json:"workers"`
	}
	res.decode(t, &raw)
	if len(raw.Workers) != 2 {
		t.Fatalf("workers = %d, want 2", len(raw.Workers))
	}
	for _, key := range []string{"id", "pool", "status", "desired_state", "last_heartbeat_at", "stale"} {
		if _, ok := raw.Workers[0][key]; !ok {
			t.Errorf("worker has no %q: %v", key, raw.Workers[0])
		}
	}

	w := h.listWorkers("pool=email").Workers[0]
	if w.ID != "w-03" || w.Pool != "email" || w.Status != "running" || w.DesiredState != "running" || w.Stale {
		t.Errorf("worker = %+v", w)
	}
	if w.LastHeartbeatAt == nil || !w.LastHeartbeatAt.Equal(h.clock.Now().Add(-time.Second)) {
		t.Errorf("last_heartbeat_at = %v, want the server's receive time %v", w.LastHeartbeatAt, h.clock.Now().Add(-time.Second))
	}

	empty := h.get("/api/workers?pool=nowhere")
	if !strings.Contains(string(empty.body), `"workers":[]`) {
		t.Errorf("empty list = %s, want \"workers\":[] rather than null", empty.body)
	}
}

func TestListWorkersPagination(t *testing.T) {
	h := newHarness(t)
	const n = 250
	for i := range n {
		h.heartbeat(heartbeatBody{ID: fmt.Sprintf("w-%04d", i), Pool: "bulk", Status: "running"})
	}

	first := h.listWorkers("")
	if len(first.Workers) != 100 || first.Limit != 100 || first.Total != n {
		t.Errorf("default page: %d workers, limit %d, total %d; want 100, 100, %d", len(first.Workers), first.Limit, first.Total, n)
	}
	if first.NextOffset == nil || *first.NextOffset != 100 {
		t.Errorf("default page next_offset = %v, want 100", first.NextOffset)
	}

	seen := map[string]bool{}
	offset := 0
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination did not end after 10 pages")
		}
		page := h.listWorkers("limit=70&offset=" + strconv.Itoa(offset))
		for _, w := range page.Workers {
			if seen[w.ID] {
				t.Errorf("worker %s on two pages", w.ID)
			}
			seen[w.ID] = true
		}
		if page.NextOffset == nil {
			break
		}
		offset = *page.NextOffset
	}
	if len(seen) != n {
		t.Errorf("pages held %d workers, want %d", len(seen), n)
	}

	last := h.listWorkers("offset=200")
	if len(last.Workers) != 50 || last.NextOffset != nil {
		t.Errorf("last page: %d workers, next_offset %v; want 50, null", len(last.Workers), last.NextOffset)
	}
	past := h.listWorkers("offset=1000")
	if len(past.Workers) != 0 || past.Total != n {
		t.Errorf("offset past the end: %d workers, total %d", len(past.Workers), past.Total)
	}
	max := h.listWorkers("limit=1000")
	if len(max.Workers) != n || max.NextOffset != nil {
		t.Errorf("limit=1000: %d workers, next_offset %v", len(max.Workers), max.NextOffset)
	}
}

func TestPoolsAndScale(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))
	h.heartbeat(plainHeartbeat("w-02", "billing", "paused"))
	h.heartbeat(plainHeartbeat("w-03", "email", "running"))

	res := h.get("/api/pools")
	if !strings.HasPrefix(string(res.body), `{"pools":[`) {
		t.Errorf("GET /api/pools = %s, want an object with a pools list", res.body)
	}
	pools := h.pools()
	billing := pools["billing"]
	if billing.DesiredCount != nil {
		t.Errorf("desired_count of a never scaled pool = %d, want null", *billing.DesiredCount)
	}
	if billing.Live != 2 || billing.ByStatus["running"] != 1 || billing.ByStatus["paused"] != 1 || billing.Stale != 0 {
		t.Errorf("billing = %+v", billing)
	}
	for _, s := range []string{"running", "paused", "draining", "stopped"} {
		if _, ok := billing.ByStatus[s]; !ok {
			t.Errorf("by_status has no %q: %v", s, billing.ByStatus)
		}
	}

	for _, n := range []int{0, 1000, 3} {
		res := h.post("/api/pools/billing/scale", fmt.Sprintf(`{"desired_count":%d}`, n))
		if res.status != http.StatusOK {
			t.Fatalf("scale to %d: status %d %s", n, res.status, res.body)
		}
		var p poolReply
		res.decode(t, &p)
		if p.DesiredCount == nil || *p.DesiredCount != n {
			t.Errorf("scale to %d: desired_count = %v", n, p.DesiredCount)
		}
	}
	if got := h.pools()["billing"].DesiredCount; got == nil || *got != 3 {
		t.Errorf("billing desired_count after scaling = %v, want 3", got)
	}

	form := h.request(http.MethodPost, "/api/pools/email/scale", "desired_count=2", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if form.status != http.StatusOK {
		t.Errorf("form scale: status %d %s", form.status, form.body)
	}

	created := h.post("/api/pools/reports/scale", `{"desired_count":2}`)
	if created.status != http.StatusOK {
		t.Fatalf("scale a new pool: status %d %s", created.status, created.body)
	}
	reports, ok := h.pools()["reports"]
	if !ok {
		t.Fatal("a scaled pool without workers is not listed")
	}
	if reports.Live != 0 || reports.DesiredCount == nil || *reports.DesiredCount != 2 {
		t.Errorf("reports = %+v", reports)
	}
}

// The server's clock decides liveness, whatever the worker's clock says.
func TestWorkerClockSkew(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()

	tests := []struct {
		id     string
		sentAt string
		warn   bool
	}{
		{"w-slow", now.Add(-10 * time.Minute).Format(time.RFC3339), true},
		{"w-zone", now.In(time.FixedZone("", 2*3600)).Format(time.RFC3339Nano), false},
		{"w-fast", now.Add(time.Hour).Format(time.RFC3339), true},
		{"w-near", now.Add(-30 * time.Second).Format(time.RFC3339), false},
		{"w-none", "", false},
	}
	for _, tt := range tests {
		body := plainHeartbeat(tt.id, "billing", "running")
		body.SentAt = tt.sentAt
		reply := h.heartbeat(body)
		if reply.ClockSkewWarning != tt.warn {
			t.Errorf("%s: heartbeat clock_skew_warning = %v, want %v", tt.id, reply.ClockSkewWarning, tt.warn)
		}
		if reply.DesiredState != "running" {
			t.Errorf("%s: desired_state = %q", tt.id, reply.DesiredState)
		}
	}
	if !strings.Contains(tests[1].sentAt, "+02:00") {
		t.Fatalf("test setup: %q is not in +02:00", tests[1].sentAt)
	}

	h.clock.Advance(testGrace)
	for _, tt := range tests {
		w := h.worker(tt.id)
		if w.LastHeartbeatAt == nil || !w.LastHeartbeatAt.Equal(now) {
			t.Errorf("%s: last_heartbeat_at = %v, want the server's receive time %v", tt.id, w.LastHeartbeatAt, now)
		}
		if w.Stale {
			t.Errorf("%s: stale at exactly the grace period", tt.id)
		}
		if w.ClockSkewWarning != tt.warn {
			t.Errorf("%s: clock_skew_warning on the worker = %v, want %v", tt.id, w.ClockSkewWarning, tt.warn)
		}
	}
	if got := len(h.listWorkers("status=offline").Workers); got != 0 {
		t.Errorf("%d workers offline within the grace period", got)
	}

	h.clock.Advance(time.Second)
	for _, tt := range tests {
		if w := h.worker(tt.id); !w.Stale {
			t.Errorf("%s: not stale one second past the grace period", tt.id)
		}
	}
}

// Per-worker labels or unbounded pool labels would make /metrics grow with
// the fleet.
func TestMetricsStayBounded(t *testing.T) {
	h := newHarness(t)
	base := startListener(t, h.app)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	const workers = 10_000
	const concurrency = 32
	ids := make([]string, workers)
	for i := range ids {
		ids[i] = fmt.Sprintf("w-%05d", i)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var failed sync.Map
	jobs := make(chan int)
	for range concurrency {
		wg.Go(func() {
			for i := range jobs {
				hb := plainHeartbeat(ids[i], randomPool(), "running")
				status, err := postHeartbeat(client, base, hb.String())
				if err != nil || status != http.StatusOK {
					failed.Store(ids[i], fmt.Sprintf("status %d, err %v", status, err))
				}
			}
		})
	}
	for i := range workers {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d heartbeats in %v", workers, time.Since(start))
	failed.Range(func(k, v any) bool {
		t.Errorf("heartbeat of %v failed: %v", k, v)
		return false
	})

	// Per-worker routes must be labelled by their template, not the path.
	for _, id := range ids[:20] {
		if res := h.get("/api/workers/" + id); res.status != http.StatusOK {
			t.Fatalf("GET worker %s: status %d", id, res.status)
		}
		if res := h.command(id, "pause"); res.status != http.StatusOK {
			t.Fatalf("pause %s: status %d", id, res.status)
		}
	}
	if res := h.get("/api/workers/w-absent"); res.status != http.StatusNotFound {
		t.Fatalf("GET absent worker: status %d", res.status)
	}

	scrapeStart := time.Now()
	body := scrapeMetrics(t, client, base)
	scrape := time.Since(scrapeStart)
	t.Logf("scrape: %d bytes in %v", len(body), scrape)
	if len(body) >= 1<<20 {
		t.Errorf("scrape is %d bytes, want under 1 MB", len(body))
	}
	if scrape > 5*time.Second {
		t.Errorf("scrape took %v", scrape)
	}

	idSet := make(map[string]bool, workers)
	for _, id := range ids {
		idSet[id] = true
	}
	idSet["w-absent"] = true
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	poolValues := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, m := range label.FindAllStringSubmatch(line, -1) {
			if idSet[m[2]] || strings.Contains(m[2], "w-0") || strings.Contains(m[2], "w-absent") {
				t.Fatalf("label %s carries a worker id: %s", m[1], line)
			}
			if m[1] == "pool" {
				poolValues[m[2]] = true
			}
		}
	}
	if len(poolValues) > testMaxPools+1 {
		t.Errorf("%d distinct pool label values, want at most %d and %s", len(poolValues), testMaxPools, metrics.OtherPool)
	}
	if !poolValues[metrics.OtherPool] {
		t.Errorf("no pool=%q series for the pools past the cap", metrics.OtherPool)
	}
	if !strings.Contains(body, "controlplane_pools 10000") {
		t.Error("controlplane_pools does not count all 10000 pools")
	}
}

const poolAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomPool() string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = poolAlphabet[rand.IntN(len(poolAlphabet))]
	}
	return string(b)
}

// startListener serves app on a loopback port until the test ends and
// returns its base URL.
func startListener(t *testing.T, app *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	return "http://" + ln.Addr().String()
}

// sendHTTP sends one JSON request with the bearer token over HTTP.
func sendHTTP(t *testing.T, client *http.Client, method, url, body string) response {
	t.Helper()
	res, err := tryHTTP(client, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryHTTP is sendHTTP for goroutines other than the test's own.
func tryHTTP(client *http.Client, method, url, body string) (response, error) {
	if len(body) > web.BodyLimit {
		return sendOversized(method, url, body)
	}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, fmt.Errorf("read body of %s %s: %w", method, url, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}, nil
}

// scrapeMetrics returns the body of GET /metrics over HTTP.
func scrapeMetrics(t *testing.T, client *http.Client, base string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d %s", res.StatusCode, b)
	}
	return string(b)
}

func postHeartbeat(client *http.Client, base, body string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/api/workers/heartbeat", bytes.NewBufferString(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// A drain that the worker ignores stays requested, across a restart.
func TestDrainIgnoredByWorker(t *testing.T) {
	h := newHarness(t)
	if res := h.post("/api/pools/billing/scale", `{"desired_count":3}`); res.status != http.StatusOK {
		t.Fatalf("scale: status %d %s", res.status, res.body)
	}
	for _, id := range []string{"w-01", "w-02", "w-03"} {
		h.heartbeat(plainHeartbeat(id, "billing", "running"))
	}
	if res := h.command("w-01", "drain"); res.status != http.StatusOK {
		t.Fatalf("drain: status %d %s", res.status, res.body)
	}

	jobs := 1200.0
	for i := range 3 {
		jobs += 100
		hb := plainHeartbeat("w-01", "billing", "running")
		hb.Metrics["jobs_processed"] = jobs
		if got := h.heartbeat(hb).DesiredState; got != "draining" {
			t.Errorf("running heartbeat %d after the drain got desired_state %q, want draining", i+1, got)
		}
	}

	// Unknown fields are ignored, so a worker cannot set its own desired state.
	override := `{"id":"w-01","pool":"billing","status":"running","desired_state":"running","metrics":{"jobs_processed":1500}}`
	res := h.post("/api/workers/heartbeat", override)
	var reply heartbeatReply
	res.decode(t, &reply)
	if res.status != http.StatusOK || reply.DesiredState != "draining" {
		t.Errorf("heartbeat carrying desired_state running: status %d, desired_state %q; want 200, draining", res.status, reply.DesiredState)
	}

	h.restart()
	jobs += 100
	hb := plainHeartbeat("w-01", "billing", "running")
	hb.Metrics["jobs_processed"] = jobs
	if got := h.heartbeat(hb).DesiredState; got != "draining" {
		t.Errorf("running heartbeat after the restart got desired_state %q, want draining", got)
	}
	w := h.worker("w-01")
	if w.DesiredState != "draining" || !w.Pending || w.Status != "running" {
		t.Errorf("w-01 while ignoring the drain: desired %q, pending %v, status %q; want draining, true, running", w.DesiredState, w.Pending, w.Status)
	}
	if w.Metrics["jobs_processed"] != jobs {
		t.Errorf("jobs_processed = %v, want %v", w.Metrics["jobs_processed"], jobs)
	}

	if got := h.heartbeat(plainHeartbeat("w-01", "billing", "draining")).DesiredState; got != "draining" {
		t.Errorf("draining heartbeat got desired_state %q", got)
	}
	w = h.worker("w-01")
	if w.Pending {
		t.Error("pending = true after the worker reported draining")
	}
	billing := h.pools()["billing"]
	if billing.ByStatus["running"] != 2 || billing.ByStatus["draining"] != 1 {
		t.Errorf("billing by_status = %v, want running 2, draining 1", billing.ByStatus)
	}
	if billing.DesiredCount == nil || *billing.DesiredCount != 3 {
		t.Errorf("billing desired_count = %v, want 3", billing.DesiredCount)
	}
	if billing.Live != 3 {
		t.Errorf("billing live = %d, want 3", billing.Live)
	}

	if got := h.heartbeat(plainHeartbeat("w-01", "billing", "stopped")).DesiredState; got != "draining" {
		t.Errorf("stopped heartbeat got desired_state %q, want draining kept", got)
	}
	w = h.worker("w-01")
	if w.Pending || w.DesiredState != "draining" || w.Status != "stopped" {
		t.Errorf("w-01 after stopping: desired %q, pending %v, status %q; want draining, false, stopped", w.DesiredState, w.Pending, w.Status)
	}
	billing = h.pools()["billing"]
	if billing.ByStatus["running"] != 2 || billing.ByStatus["stopped"] != 1 || billing.ByStatus["draining"] != 0 {
		t.Errorf("billing by_status after the stop = %v, want running 2, stopped 1", billing.ByStatus)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))

	tests := []struct{ method, path, allow string }{
		{http.MethodDelete, "/api/workers/w-01", "GET"},
		{http.MethodPut, "/api/workers/heartbeat", "POST"},
		{http.MethodPatch, "/api/pools/billing", "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			h := h.with(t)
			res := h.request(tt.method, tt.path, "", nil)
			if res.status != http.StatusMethodNotAllowed {
				t.Errorf("status = %d, want 405; body %s", res.status, res.body)
			}
			if allow := res.header.Get("Allow"); !strings.Contains(allow, tt.allow) {
				t.Errorf("Allow = %q, want it to list %s", allow, tt.allow)
			}
		})
	}
}

func TestPoolCommandSkipsConflictsAndStale(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-stale", "billing", "running"))
	h.clock.Advance(testGrace + time.Second)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))
	h.heartbeat(plainHeartbeat("w-02", "billing", "running"))
	h.heartbeat(plainHeartbeat("w-other", "email", "running"))
	if res := h.command("w-02", "pause"); res.status != http.StatusOK {
		t.Fatalf("pause w-02: status %d %s", res.status, res.body)
	}

	res := h.post("/api/pools/billing/pause", "")
	if res.status != http.StatusOK {
		t.Fatalf("pool pause: status %d %s", res.status, res.body)
	}
	var reply struct {
		Changed []string `json:"changed"`
		Skipped int      `json:"skipped"`
	}
	res.decode(t, &reply)
	if strings.Join(reply.Changed, ",") != "w-01" {
		t.Errorf("changed = %v, want [w-01]", reply.Changed)
	}
	if reply.Skipped != 1 {
		t.Errorf("skipped = %d, want 1 (w-02 was already paused)", reply.Skipped)
	}

	wantDesired := map[string]string{"w-01": "paused", "w-02": "paused", "w-stale": "running", "w-other": "running"}
	for id, want := range wantDesired {
		if got := h.worker(id).DesiredState; got != want {
			t.Errorf("%s desired_state = %q, want %q", id, got, want)
		}
	}
}

func TestConcurrentCommandsApplyOnce(t *testing.T) {
	h := newHarness(t)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))
	base := startListener(t, h.app)
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	const operators = 20
	statuses := make([]int, operators)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range operators {
		wg.Go(func() {
			<-start
			res, err := tryHTTP(client, http.MethodPost, base+"/api/workers/w-01/pause", "")
			if err != nil {
				t.Error(err)
			}
			statuses[i] = res.status
		})
	}
	close(start)
	wg.Wait()

	counts := map[int]int{}
	for _, s := range statuses {
		counts[s]++
	}
	if counts[http.StatusOK] != 1 || counts[http.StatusConflict] != operators-1 {
		t.Errorf("statuses = %v, want one 200 and %d 409", counts, operators-1)
	}
	audit := h.rdb.LRange(context.Background(), "audit:log", 0, -1).Val()
	if len(audit) != 1 {
		t.Errorf("audit:log has %d entries, want 1: %v", len(audit), audit)
	}
}

// preloadGhost writes a worker as another tool might have left it, with keys
// that never expire and a last heartbeat two days before now.
func preloadGhost(t *testing.T, h *harness, withMeta bool) {
	t.Helper()
	ctx := context.Background()
	last := h.clock.Now().Add(-48 * time.Hour).UnixMilli()
	_, err := h.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.Set(ctx, "worker:w-ghost:heartbeat", last, 0)
		p.Set(ctx, "worker:w-ghost:status", "running", 0)
		p.ZAdd(ctx, "workers:active", goredis.Z{Score: float64(last), Member: "w-ghost"})
		p.SAdd(ctx, "pools:known", "billing")
		if withMeta {
			p.HSet(ctx, "worker:w-ghost:meta", "pool", "billing")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("preload ghost: %v", err)
	}
}

// Liveness comes from the heartbeat's age, never from whether a key exists.
func TestGhostWorkerIsStale(t *testing.T) {
	h := newHarness(t)
	preloadGhost(t, h, true)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))

	list := h.listWorkers("")
	if got := ids(list); got != "w-01,w-ghost" {
		t.Fatalf("ids = %s, want w-01,w-ghost", got)
	}
	ghost := list.Workers[1]
	if !ghost.Stale {
		t.Error("ghost with a two-day-old heartbeat is not stale")
	}
	if ghost.Pool != "billing" {
		t.Errorf("ghost pool = %q", ghost.Pool)
	}
	if got := ids(h.listWorkers("status=offline")); got != "w-ghost" {
		t.Errorf("status=offline = %s, want w-ghost", got)
	}
	if got := ids(h.listWorkers("status=running")); got != "w-01" {
		t.Errorf("status=running = %s, want only w-01", got)
	}
	if w := h.worker("w-ghost"); !w.Stale {
		t.Error("GET /api/workers/w-ghost: not stale")
	}

	billing := h.pools()["billing"]
	if billing.Stale != 1 || billing.Live != 1 || billing.ByStatus["running"] != 1 {
		t.Errorf("billing = %+v, want 1 stale, 1 live running", billing)
	}
}

func TestGhostWorkerWithoutMeta(t *testing.T) {
	h := newHarness(t)
	preloadGhost(t, h, false)
	h.heartbeat(plainHeartbeat("w-01", "billing", "running"))

	if w := h.worker("w-ghost"); !w.Stale {
		t.Error("ghost without meta: not stale")
	}
	for name, p := range h.pools() {
		if err := fleet.ValidateName("pool", name); err != nil {
			t.Errorf("GET /api/pools lists a pool named %q (%+v): a worker whose pool is unknown must not create one", name, p)
		}
	}

	res := h.get("/metrics")
	if strings.Contains(string(res.body), `pool=""`) {
		t.Error(`/metrics has a series with pool=""`)
	}
}

// sendOversized sends a body over the server's limit on a raw connection,
// writing and reading at once: the server answers 413 and closes the
// connection before it has read the body, and net/http's client would then
// report the failed write instead of the response.
func sendOversized(method, rawURL, body string) (response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return response{}, err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return response{}, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))

	go func() {
		// A write error is expected once the server has answered.
		_, _ = fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			method, u.RequestURI(), u.Host, testToken, len(body), body)
	}()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return response{}, fmt.Errorf("read the response to an oversized %s %s: %w", method, rawURL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, fmt.Errorf("read body of %s %s: %w", method, rawURL, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}, nil
}
