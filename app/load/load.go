package load

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latencyCapacity is the number of latencies each sender preallocates room
// for in a closed-loop run, where the count is not known in advance. More
// latencies still fit, at the cost of growing the slice.
const latencyCapacity = 16 << 10

// maxLatencyCapacity caps the preallocation of an open-loop run per sender
// (8 MiB of latencies).
const maxLatencyCapacity = 1 << 20

// Result summarizes a run.
type Result struct {
	// Requests counts completed requests, including Errors: those that
	// failed in transport (connection refused, timeout) or returned a status
	// other than 2xx.
	Requests int64
	Errors   int64

	// Duration is the wall time from the start of the run until the last
	// response, and Throughput is Requests per second of it.
	Duration   time.Duration
	Throughput float64

	// TargetRate is Config.Rate: the scheduled requests per second of an
	// open-loop run, or 0 for a closed-loop run.
	TargetRate float64

	// P50, P90, P99 and Max are exact latency percentiles (nearest rank)
	// over every request that received a response, whatever its status.
	// Transport errors have no latency. In an open-loop run latency counts
	// from the scheduled send time.
	P50, P90, P99, Max time.Duration

	// StatusCounts counts responses by HTTP status.
	StatusCounts map[int]int64

	// FirstError is the first transport error or non-2xx status seen, or ""
	// when there was none.
	FirstError string
}

// String formats the result as a few lines for a terminal.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests  %d in %s (%.1f/s", r.Requests, r.Duration.Round(time.Millisecond), r.Throughput)
	if r.TargetRate > 0 {
		fmt.Fprintf(&b, ", target %.1f/s", r.TargetRate)
	}
	fmt.Fprintf(&b, "), errors %d\n", r.Errors)
	fmt.Fprintf(&b, "latency   p50 %s, p90 %s, p99 %s, max %s\n",
		roundLatency(r.P50), roundLatency(r.P90), roundLatency(r.P99), roundLatency(r.Max))

	codes := slices.Sorted(maps.Keys(r.StatusCounts))
	statuses := make([]string, len(codes))
	for i, code := range codes {
		statuses[i] = fmt.Sprintf("%d: %d", code, r.StatusCounts[code])
	}
	if len(statuses) == 0 {
		statuses = []string{"no responses"}
	}
	fmt.Fprintf(&b, "statuses  %s\n", strings.Join(statuses, ", "))
	if r.FirstError != "" {
		fmt.Fprintf(&b, "first error: %s\n", r.FirstError)
	}
	return b.String()
}

// roundLatency keeps three significant digits or so, enough to compare runs.
func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// Run sends requests for cfg.Duration and returns what it measured. It
// returns a validation error before sending anything when cfg is invalid.
// When ctx ends early, Run stops, discards the requests that ctx cut off and
// returns the partial Result with ctx.Err().
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg = cfg.withDefaults()

	// One keep-alive connection per sender, no proxy (a proxy would be
	// measured along with the server), and no compression. Setting
	// DialContext keeps the Transport on HTTP/1.1 for https URLs too, so
	// Concurrency is also the number of connections.
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.Concurrency,
		MaxIdleConnsPerHost: cfg.Concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport, Timeout: cfg.Timeout}

	start := time.Now()
	run := &runner{
		cfg:        cfg,
		httpClient: httpClient,
		builder:    newRequestBuilder(cfg, start),
		start:      start,
		stopAt:     start.Add(cfg.Duration),
	}
	senders := make([]*sender, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range senders {
		senders[i] = newSender(run.latencyCapacity())
		wg.Go(func() { run.send(ctx, senders[i]) })
	}
	wg.Wait()

	result := merge(senders, time.Since(start))
	result.TargetRate = cfg.Rate
	return result, ctx.Err()
}

// runner holds what the senders of one run share.
type runner struct {
	cfg        Config
	httpClient *http.Client
	builder    *requestBuilder
	start      time.Time
	stopAt     time.Time
	next       atomic.Int64 // number of the next request
}

func (r *runner) latencyCapacity() int {
	if r.cfg.Rate == 0 {
		return latencyCapacity
	}
	// A rate far above what the senders reach must not preallocate for it.
	perSender := r.cfg.Rate * r.cfg.Duration.Seconds() / float64(r.cfg.Concurrency)
	return int(min(perSender, maxLatencyCapacity)) + 1
}

// send runs one sender's loop until the run's end. In an open-loop run each
// request waits for its scheduled time, start + n/Rate.
func (r *runner) send(ctx context.Context, s *sender) {
	wait := time.NewTimer(0)
	<-wait.C
	for {
		seq := r.next.Add(1) - 1
		scheduled := time.Now()
		if r.cfg.Rate > 0 {
			scheduled = r.start.Add(time.Duration(float64(seq) / r.cfg.Rate * float64(time.Second)))
			if !scheduled.Before(r.stopAt) {
				return
			}
			if delay := time.Until(scheduled); delay > 0 {
				wait.Reset(delay)
				select {
				case <-ctx.Done():
					return
				case <-wait.C:
				}
			}
		}
		// A sender that is behind schedule also stops at the end.
		if !time.Now().Before(r.stopAt) || ctx.Err() != nil {
			return
		}

		status, err := r.do(ctx, seq)
		latency := time.Since(scheduled)
		if ctx.Err() != nil {
			return // cut off by the caller, not a server error
		}
		s.record(latency, status, err)
	}
}

// do sends request seq and returns its status, or an error when none came.
func (r *runner) do(ctx context.Context, seq int64) (int, error) {
	req, err := r.builder.build(ctx, seq)
	if err != nil {
		return 0, err
	}
	res, err := r.httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	// Read the whole body so that the connection is reused.
	_, err = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("read response body: %w", err)
	}
	return res.StatusCode, nil
}

// sender holds one goroutine's measurements, so that recording needs no lock.
type sender struct {
	latencies    []time.Duration
	statusCounts map[int]int64
	requests     int64
	errors       int64
	firstError   string
	firstErrorAt time.Time
}

func newSender(capacity int) *sender {
	return &sender{latencies: make([]time.Duration, 0, capacity), statusCounts: map[int]int64{}}
}

func (s *sender) record(latency time.Duration, status int, err error) {
	s.requests++
	if err != nil {
		s.errors++
		s.noteError(err.Error())
		return
	}
	s.latencies = append(s.latencies, latency)
	s.statusCounts[status]++
	if status < 200 || status > 299 {
		s.errors++
		s.noteError(fmt.Sprintf("HTTP %d %s", status, http.StatusText(status)))
	}
}

func (s *sender) noteError(text string) {
	if s.firstError == "" {
		s.firstError = text
		s.firstErrorAt = time.Now()
	}
}

// merge combines the senders' measurements into one Result.
func merge(senders []*sender, elapsed time.Duration) Result {
	result := Result{Duration: elapsed, StatusCounts: map[int]int64{}}
	total := 0
	for _, s := range senders {
		total += len(s.latencies)
	}
	latencies := make([]time.Duration, 0, total)

	var firstErrorAt time.Time
	for _, s := range senders {
		result.Requests += s.requests
		result.Errors += s.errors
		latencies = append(latencies, s.latencies...)
		for status, count := range s.statusCounts {
			result.StatusCounts[status] += count
		}
		if s.firstError != "" && (firstErrorAt.IsZero() || s.firstErrorAt.Before(firstErrorAt)) {
			result.FirstError, firstErrorAt = s.firstError, s.firstErrorAt
		}
	}

	if elapsed > 0 {
		result.Throughput = float64(result.Requests) / elapsed.Seconds()
	}
	slices.Sort(latencies)
	result.P50 = percentile(latencies, 0.50)
	result.P90 = percentile(latencies, 0.90)
	result.P99 = percentile(latencies, 0.99)
	if len(latencies) > 0 {
		result.Max = latencies[len(latencies)-1]
	}
	return result
}

// percentile returns the nearest-rank percentile p (0 < p <= 1) of sorted,
// or 0 when sorted is empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
