package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// heartbeatPath and healthzPath are the endpoints of the two targets.
const (
	heartbeatPath = "/api/workers/heartbeat"
	healthzPath   = "/healthz"
)

// Simulated job counts per heartbeat: each heartbeat of a worker adds
// jobsPerHeartbeat to jobs_processed, and one job in failureDivisor fails.
const (
	jobsPerHeartbeat = 10
	failureDivisor   = 100
)

// requestBuilder builds the requests of one run. It is safe for concurrent
// use because it only reads its fields after construction.
type requestBuilder struct {
	target        string
	url           string
	authorization string
	workers       int64

	// heartbeatPrefixes holds, for each worker id, the JSON body up to the
	// opening quote of sent_at, which is the same in every heartbeat.
	heartbeatPrefixes [][]byte
}

func newRequestBuilder(cfg Config, startedAt time.Time) *requestBuilder {
	base := strings.TrimRight(cfg.URL, "/")
	b := &requestBuilder{
		target:        cfg.Target,
		authorization: "Bearer " + cfg.Token,
		workers:       int64(cfg.Workers),
	}
	if cfg.Target == TargetHealthz {
		b.url = base + healthzPath
		return b
	}

	b.url = base + heartbeatPath
	host, _ := os.Hostname()
	started := startedAt.Format(time.RFC3339)
	b.heartbeatPrefixes = make([][]byte, cfg.Workers)
	for i := range b.heartbeatPrefixes {
		pool, id := workerName(i, cfg.Pools)
		b.heartbeatPrefixes[i] = fmt.Appendf(nil,
			`{"id":%s,"pool":%s,"status":"running","host":%s,"pid":%d,"version":"load","started_at":%q,"sent_at":"`,
			jsonString(id), jsonString(pool), jsonString(host), os.Getpid(), started)
	}
	return b
}

// workerName returns the pool and id of worker i, load-pool-{p}-{n}, spread
// round-robin over pools like the simulator's workers.
func workerName(i, pools int) (pool, id string) {
	pool = fmt.Sprintf("load-pool-%d", i%pools+1)
	return pool, fmt.Sprintf("%s-%d", pool, i/pools+1)
}

func jsonString(s string) string {
	encoded, _ := json.Marshal(s)
	return string(encoded)
}

// build returns request number seq of the run. Heartbeats rotate through the
// worker ids, and each worker's jobs_processed and jobs_failed grow with
// every heartbeat it sends.
//
// NOTE: when one request is slow while other senders go a full rotation
// ahead, two heartbeats of the same worker are in flight at once and can
// arrive in the wrong order, so the server may see a counter decrease.
func (b *requestBuilder) build(ctx context.Context, seq int64) (*http.Request, error) {
	if b.target == TargetHealthz {
		return http.NewRequestWithContext(ctx, http.MethodGet, b.url, nil)
	}

	body := b.heartbeatBody(seq, time.Now())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", b.authorization)
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// heartbeatBody appends the parts that change per heartbeat to the worker's
// prefix. The body gets a fresh buffer because the Transport may still read
// it after the response has arrived.
func (b *requestBuilder) heartbeatBody(seq int64, now time.Time) []byte {
	worker := seq % b.workers
	beat := seq / b.workers
	processed := beat * jobsPerHeartbeat

	prefix := b.heartbeatPrefixes[worker]
	body := make([]byte, 0, len(prefix)+160)
	body = append(body, prefix...)
	body = now.AppendFormat(body, time.RFC3339Nano)
	body = append(body, `","metrics":{"jobs_processed":`...)
	body = strconv.AppendInt(body, processed, 10)
	body = append(body, `,"jobs_failed":`...)
	body = strconv.AppendInt(body, processed/failureDivisor, 10)
	body = append(body, `,"busy":1,"memory_mb":256,"queue_depth":`...)
	body = strconv.AppendInt(body, seq%8, 10)
	body = append(body, "}}"...)
	return body
}
