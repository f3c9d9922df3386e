package load

// This file holds what the dashboard benchmark needs beyond Run. It reads
// Server-Sent Events streams, matches the heartbeats sent for a worker with
// the row events that report them, and sends heartbeats with a callback at
// each send.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one Server-Sent Event as a stream received it.
type Event struct {
	// Name is the event field, or "message" when the event has none.
	Name string
	// Data is the event's data lines joined by "\n". It is only valid
	// during the handler call, because the reader reuses its buffer.
	Data []byte
	// Received is when the blank line that ends the event was read.
	Received time.Time
}

// ReadEvents parses a text/event-stream from r and calls handle for each
// event that has data, in order. Comment lines (": keep-alive") and the id
// and retry fields are skipped. It returns nil at the end of r, or the read
// error. Lines may end with "\n" or "\r\n". A lone "\r", which the SSE
// standard also allows, is not treated as a line end.
func ReadEvents(r io.Reader, handle func(Event)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		name []byte
		data []byte
		line []byte // a line longer than the reader's buffer, assembled
	)
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			line = append(line, chunk...)
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// An event that the stream did not end with a blank line
				// is incomplete, and the standard discards it.
				return nil
			}
			return err
		}
		if len(line) > 0 {
			line = append(line, chunk...)
			chunk = line
		}
		chunk = bytes.TrimSuffix(bytes.TrimSuffix(chunk, []byte("\n")), []byte("\r"))

		switch {
		case len(chunk) == 0:
			if len(data) > 0 {
				eventName := "message"
				if len(name) > 0 {
					eventName = string(name)
				}
				handle(Event{Name: eventName, Data: data[:len(data)-1], Received: time.Now()})
			}
			name, data = name[:0], data[:0]
		case chunk[0] == ':':
			// A comment, such as the server's keep-alive.
		default:
			field, value, _ := bytes.Cut(chunk, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "event":
				name = append(name[:0], value...)
			case "data":
				data = append(data, value...)
				data = append(data, '\n')
			}
		}
		line = line[:0]
	}
}

// Stream is one open event stream. Its counters may be read while Read runs.
type Stream struct {
	body   io.ReadCloser
	bytes  atomic.Int64
	events atomic.Int64
}

// OpenStream sends GET url with the bearer token and returns the stream
// once the response headers have arrived with status 200 and a
// text/event-stream body. client should have no Timeout, because a
// Timeout would also end the stream. Cancel ctx to end it instead.
func OpenStream(ctx context.Context, client *http.Client, url, token string) (*Stream, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("open event stream: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		_ = res.Body.Close()
		return nil, fmt.Errorf("open event stream %s: HTTP %d %s", url, res.StatusCode, http.StatusText(res.StatusCode))
	}
	if ct := res.Header.Get("Content-Type"); !bytes.HasPrefix([]byte(ct), []byte("text/event-stream")) {
		_ = res.Body.Close()
		return nil, fmt.Errorf("open event stream %s: Content-Type %q, want text/event-stream", url, ct)
	}
	return &Stream{body: res.Body}, nil
}

// Read parses the stream's events and calls handle for each, until the
// server ends the stream, Close is called or the context of OpenStream ends.
func (s *Stream) Read(handle func(Event)) error {
	counted := &countingReader{r: s.body, n: &s.bytes}
	return ReadEvents(counted, func(ev Event) {
		s.events.Add(1)
		handle(ev)
	})
}

// Bytes returns the number of body bytes received so far: the event stream
// after HTTP chunked decoding, without the response headers.
func (s *Stream) Bytes() int64 { return s.bytes.Load() }

// Events returns the number of events received so far.
func (s *Stream) Events() int64 { return s.events.Load() }

// Close ends the stream, and a Read in progress returns.
func (s *Stream) Close() error { return s.body.Close() }

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Tracker records the send times of the heartbeats of a fixed set of
// worker ids, so that each stream's Cursor can measure how long a heartbeat
// took to reach it. It is safe for concurrent use.
type Tracker struct {
	index map[string]int
	logs  []sendLog
}

// sendLog holds one worker's heartbeats in send order.
type sendLog struct {
	mu    sync.Mutex
	sends []send
}

type send struct {
	at     time.Time
	failed bool
}

// NewTracker returns a tracker for the worker ids.
func NewTracker(ids []string) *Tracker {
	t := &Tracker{index: make(map[string]int, len(ids)), logs: make([]sendLog, len(ids))}
	for i, id := range ids {
		t.index[id] = i
	}
	return t
}

// Sent records that a heartbeat of worker id was sent at at. Untracked ids
// are ignored. Call it before sending, so that no event can report the
// heartbeat before it is recorded.
func (t *Tracker) Sent(id string, at time.Time) {
	i, ok := t.index[id]
	if !ok {
		return
	}
	log := &t.logs[i]
	log.mu.Lock()
	defer log.mu.Unlock()
	// Concurrent senders may record slightly out of order. Keep the log
	// sorted so that "every heartbeat before a time" is a prefix.
	n := len(log.sends)
	log.sends = append(log.sends, send{at: at})
	for n > 0 && log.sends[n-1].at.After(at) {
		log.sends[n], log.sends[n-1] = log.sends[n-1], log.sends[n]
		n--
	}
}

// Failed marks the heartbeat of worker id sent at at as failed: the server
// did not accept it, so no event can report it, and it is never the start
// of a latency.
func (t *Tracker) Failed(id string, at time.Time) {
	i, ok := t.index[id]
	if !ok {
		return
	}
	log := &t.logs[i]
	log.mu.Lock()
	defer log.mu.Unlock()
	for j := len(log.sends) - 1; j >= 0; j-- {
		if log.sends[j].at.Equal(at) {
			log.sends[j].failed = true
			return
		}
	}
}

// Cursor is one stream's view of a Tracker: for each worker it remembers
// which heartbeats the stream has seen, and it collects the stream's
// latencies. A Cursor is not safe for concurrent use, so each stream needs
// its own.
type Cursor struct {
	tracker *Tracker
	next    []int // per worker, the index of the first heartbeat not yet seen

	latencies []time.Duration
	// RowEvents counts events for tracked workers. NoNewHeartbeat counts
	// those of them that reported no heartbeat the stream had not seen yet,
	// such as a push of a liveness change or of a heartbeat sent before the
	// tracking began.
	RowEvents      int64
	NoNewHeartbeat int64
	// TableEvents counts DeliverAll calls.
	TableEvents int64
}

// NewCursor returns a cursor that has seen no heartbeat.
func (t *Tracker) NewCursor() *Cursor {
	return &Cursor{tracker: t, next: make([]int, len(t.logs))}
}

// Deliver records that an event about worker id was received at received
// and that it reports every heartbeat of the worker sent before cutoff.
// Those heartbeats count as seen, and the latency of the event is received
// minus the send time of the oldest of them that did not fail. Deliver
// returns that latency, or false when the event reported no heartbeat that
// was not seen before or id is not tracked.
func (c *Cursor) Deliver(id string, cutoff, received time.Time) (time.Duration, bool) {
	i, ok := c.tracker.index[id]
	if !ok {
		return 0, false
	}
	c.RowEvents++
	oldest, ok := c.consume(i, cutoff)
	if !ok {
		c.NoNewHeartbeat++
		return 0, false
	}
	latency := received.Sub(oldest)
	c.latencies = append(c.latencies, latency)
	return latency, true
}

// DeliverAll records an event that shows every tracked worker at once, such
// as a whole table, as reporting every heartbeat sent before cutoff. It
// records no latency, because only row events are measured.
func (c *Cursor) DeliverAll(cutoff time.Time) {
	c.TableEvents++
	for i := range c.next {
		c.consume(i, cutoff)
	}
}

// consume marks worker i's heartbeats sent before cutoff as seen and
// returns the send time of the oldest of them that did not fail.
func (c *Cursor) consume(i int, cutoff time.Time) (time.Time, bool) {
	log := &c.tracker.logs[i]
	log.mu.Lock()
	defer log.mu.Unlock()
	var oldest time.Time
	found := false
	j := c.next[i]
	for ; j < len(log.sends) && log.sends[j].at.Before(cutoff); j++ {
		if !found && !log.sends[j].failed {
			oldest, found = log.sends[j].at, true
		}
	}
	c.next[i] = j
	return oldest, found
}

// Unseen counts the heartbeats sent before sentBefore that did not fail
// and that the stream has not seen.
func (c *Cursor) Unseen(sentBefore time.Time) int {
	n := 0
	for i := range c.next {
		log := &c.tracker.logs[i]
		log.mu.Lock()
		for _, s := range log.sends[c.next[i]:] {
			if s.at.Before(sentBefore) && !s.failed {
				n++
			}
		}
		log.mu.Unlock()
	}
	return n
}

// Latencies returns the latencies that Deliver recorded, in arrival order.
func (c *Cursor) Latencies() []time.Duration { return c.latencies }

// LatencySummary contains exact nearest-rank percentiles of a set of
// latencies.
type LatencySummary struct {
	Count              int
	P50, P95, P99, Max time.Duration
}

// SummarizeLatencies sorts latencies in place and returns their
// percentiles. All are zero when latencies is empty.
func SummarizeLatencies(latencies []time.Duration) LatencySummary {
	slices.Sort(latencies)
	s := LatencySummary{
		Count: len(latencies),
		P50:   percentile(latencies, 0.50),
		P95:   percentile(latencies, 0.95),
		P99:   percentile(latencies, 0.99),
	}
	if len(latencies) > 0 {
		s.Max = latencies[len(latencies)-1]
	}
	return s
}

// String formats the summary on one line.
func (s LatencySummary) String() string {
	return fmt.Sprintf("%d samples, p50 %s, p95 %s, p99 %s, max %s",
		s.Count, roundLatency(s.P50), roundLatency(s.P95), roundLatency(s.P99), roundLatency(s.Max))
}

// WorkerIDs returns the ids of the workers that Run and SendHeartbeats
// send heartbeats for with this many workers and pools, in rotation order.
func WorkerIDs(workers, pools int) []string {
	ids := make([]string, workers)
	for i := range ids {
		_, ids[i] = workerName(i, pools)
	}
	return ids
}

// FirstIDs returns the first n of ids in the order of the dashboard's
// default sort (by id, byte-wise ascending), without changing ids.
func FirstIDs(ids []string, n int) []string {
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	return sorted[:min(n, len(sorted))]
}

// Heartbeats describes a run of SendHeartbeats.
type Heartbeats struct {
	// Config is used as in Run, except that Target must be
	// TargetHeartbeat (or empty).
	Config
	// First is the number of the first heartbeat of the rotation that
	// Run would send: heartbeat n goes to worker n mod Workers and carries
	// job counters that grow with n / Workers. Start after an earlier run's
	// heartbeats so that counters keep growing.
	First int64
	// Count stops the run after this many heartbeats, or 0 for no limit.
	// The run also stops after Duration.
	Count int64
	// OnSend, when set, is called with the worker id and send time just
	// before each heartbeat is sent, and OnFail when that heartbeat fails
	// in transport or gets a status other than 2xx. They are called from
	// many goroutines at once.
	OnSend, OnFail func(id string, at time.Time)
}

// SendHeartbeats sends heartbeats like Run, closed-loop or at a fixed Rate,
// and reports each send to OnSend. Latencies in the Result count from the
// send time, not from the scheduled time as in Run. A sender that falls
// behind schedule therefore shows as a Throughput below TargetRate.
func SendHeartbeats(ctx context.Context, h Heartbeats) (Result, error) {
	if h.Target != "" && h.Target != TargetHeartbeat {
		return Result{}, fmt.Errorf("target %q is invalid: SendHeartbeats only sends heartbeats", h.Target)
	}
	if h.First < 0 || h.Count < 0 {
		return Result{}, fmt.Errorf("first %d and count %d are invalid: want numbers >= 0", h.First, h.Count)
	}
	if err := h.Validate(); err != nil {
		return Result{}, err
	}
	cfg := h.withDefaults()

	transport := &http.Transport{
		MaxIdleConns:        cfg.Concurrency,
		MaxIdleConnsPerHost: cfg.Concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()

	start := time.Now()
	run := &runner{
		cfg:        cfg,
		httpClient: &http.Client{Transport: transport, Timeout: cfg.Timeout},
		builder:    newRequestBuilder(cfg, start),
		start:      start,
		stopAt:     start.Add(cfg.Duration),
	}
	ids := WorkerIDs(cfg.Workers, cfg.Pools)
	var count atomic.Int64
	senders := make([]*sender, cfg.Concurrency)
	var wg sync.WaitGroup
	for i := range senders {
		senders[i] = newSender(run.latencyCapacity())
		wg.Go(func() {
			s := senders[i]
			for {
				n := count.Add(1) - 1
				if h.Count > 0 && n >= h.Count {
					return
				}
				if cfg.Rate > 0 {
					scheduled := start.Add(time.Duration(float64(n) / cfg.Rate * float64(time.Second)))
					if !scheduled.Before(run.stopAt) || !sleepUntil(ctx, scheduled) {
						return
					}
				}
				if !time.Now().Before(run.stopAt) || ctx.Err() != nil {
					return
				}

				seq := h.First + n
				id := ids[seq%int64(cfg.Workers)]
				sentAt := time.Now()
				if h.OnSend != nil {
					h.OnSend(id, sentAt)
				}
				status, err := run.do(ctx, seq)
				if ctx.Err() != nil {
					return
				}
				s.record(time.Since(sentAt), status, err)
				if (err != nil || status < 200 || status > 299) && h.OnFail != nil {
					h.OnFail(id, sentAt)
				}
			}
		})
	}
	wg.Wait()

	result := merge(senders, time.Since(start))
	result.TargetRate = cfg.Rate
	return result, ctx.Err()
}

// sleepUntil waits until t and reports whether ctx was still live then.
func sleepUntil(ctx context.Context, t time.Time) bool {
	delay := time.Until(t)
	if delay <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
