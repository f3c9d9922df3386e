package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/verifier/controlplane/app/load"
	"github.com/verifier/controlplane/app/web"
	"github.com/verifier/controlplane/views"
)

// Paths and metric names that the dashboard benchmark reads.
const (
	overviewPath   = web.UIPrefix + "/overview"
	overviewEvents = web.UIPrefix + "/events?view=overview"

	metricCPU        = "process_cpu_seconds_total"
	metricRSS        = "process_resident_memory_bytes"
	metricDropped    = "controlplane_event_stream_dropped_total"
	metricOverviewNs = `controlplane_http_request_duration_seconds_%s{method="GET",route="` + overviewPath + `",status="200"}`
)

// settleTime is how long the benchmark keeps reading the streams after the
// last heartbeat. The hub coalesces changes for 1 s, so every heartbeat of
// the run is pushed well within this unless the server falls behind.
const settleTime = 5 * time.Second

// dashboardBench holds the flags of bench-dashboard.
type dashboardBench struct {
	url, token        string
	workers, pools    int
	rate              float64
	streams           int
	duration          time.Duration
	concurrency       int
	overviewRequests  int
	scrapeInterval    time.Duration
	openParallelism   int
	streamOpenTimeout time.Duration
}

// BenchDashboard measures the live dashboard under heartbeat load. It
// reports how long a heartbeat takes to reach every open overview as a row
// event, the server's CPU and memory meanwhile, and the overview's response
// time with the whole fleet. It also compares the bytes one open dashboard
// receives with polling the overview every 5 s.
func BenchDashboard(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	b, err := parseDashboardBench(args, getenv, stdout)
	if err != nil || b == nil {
		return err
	}
	return b.run(ctx, stdout)
}

func parseDashboardBench(args []string, getenv func(string) string, stdout io.Writer) (*dashboardBench, error) {
	fs := flag.NewFlagSet("bench-dashboard", flag.ContinueOnError)
	fs.SetOutput(stdout)
	b := &dashboardBench{}
	fs.StringVar(&b.url, "url", "http://localhost:8080", "base URL of the control plane")
	fs.StringVar(&b.token, "token", getenv("CONTROL_PLANE_TOKEN"), "bearer token (default $CONTROL_PLANE_TOKEN, also read from .env)")
	fs.IntVar(&b.workers, "workers", 10_000, "distinct worker ids, each seeded with one heartbeat first")
	fs.IntVar(&b.pools, "pools", 20, "pools the worker ids are spread over")
	fs.Float64Var(&b.rate, "rate", 2_000, "heartbeats per second during the run, rotating over the worker ids")
	fs.IntVar(&b.streams, "streams", 500, "event streams to open, each on its own connection")
	fs.DurationVar(&b.duration, "duration", 60*time.Second, "length of the heartbeat run")
	fs.IntVar(&b.concurrency, "concurrency", 256, "heartbeat connections of the run")
	fs.IntVar(&b.overviewRequests, "overview-requests", 50, "sequential GETs of the overview, timed during and after the run")
	fs.DurationVar(&b.scrapeInterval, "scrape-interval", 5*time.Second, "interval of the /metrics scrapes that sample the server's memory")
	fs.IntVar(&b.openParallelism, "open-parallelism", 16, "event streams opened at the same time")
	fs.DurationVar(&b.streamOpenTimeout, "open-timeout", 2*time.Minute, "time limit for opening every stream and receiving its first table")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}

	var errs []error
	if b.streams < 1 || b.streams > load.MaxConcurrency {
		errs = append(errs, fmt.Errorf("streams %d is invalid: want 1 to %d", b.streams, load.MaxConcurrency))
	}
	if b.rate <= 0 {
		errs = append(errs, fmt.Errorf("rate %v is invalid: want heartbeats per second above 0", b.rate))
	}
	if b.overviewRequests < 1 {
		errs = append(errs, fmt.Errorf("overview-requests %d is invalid: want 1 or more", b.overviewRequests))
	}
	if b.scrapeInterval <= 0 || b.openParallelism < 1 || b.streamOpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("scrape-interval %s, open-parallelism %d and open-timeout %s are invalid: want values above 0",
			b.scrapeInterval, b.openParallelism, b.streamOpenTimeout))
	}
	// The heartbeat settings are checked by load.Config.Validate.
	cfg := load.Config{URL: b.url, Token: b.token, Workers: b.workers, Pools: b.pools, Rate: b.rate, Duration: b.duration, Concurrency: b.concurrency}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bench-dashboard: %w", err)
	}
	b.url = strings.TrimRight(b.url, "/")
	return b, nil
}

// dashboardReport collects what one benchmark run measured.
type dashboardReport struct {
	loadAverageStart, loadAverageEnd string

	seed       load.Result
	pageIDs    []string
	pageNote   string
	openTime   time.Duration
	heartbeats load.Result
	runEnd     time.Time
	runWall    time.Duration

	byArrival, byHeartbeat load.LatencySummary
	rowEvents              int64
	noNewByArrival         int64
	noNewByHeartbeat       int64
	tableEvents            int64
	rowsWithoutTime        int64
	unseen                 int
	endedEarly             int
	dropped                float64

	serverCores, benchCores float64
	maxRSS                  float64
	rssScrapes              int
	scrapeErrors            int

	overviewIdle, overviewLoaded load.LatencySummary
	overviewServerMean           time.Duration
	overviewBytes                int

	streamPerMinute []float64 // bytes, sorted
	tallies         map[string]*eventTally
}

func (b *dashboardBench) run(ctx context.Context, stdout io.Writer) error {
	rep := &dashboardReport{loadAverageStart: loadAverage()}
	fmt.Fprintf(stdout, "bench-dashboard: %d workers in %d pools, %.0f heartbeats/s for %s, %d event streams\n",
		b.workers, b.pools, b.rate, b.duration, b.streams)
	fmt.Fprintf(stdout, "machine: %d CPUs, %s/%s, %s; load average %s\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), rep.loadAverageStart)

	httpClient := &http.Client{Timeout: 30 * time.Second}
	before, err := scrapeMetrics(ctx, httpClient, b.url, b.token)
	if err != nil {
		return err
	}

	// Seed one heartbeat per worker id, so that the whole fleet exists.
	rep.seed, err = load.SendHeartbeats(ctx, load.Heartbeats{
		Config: load.Config{URL: b.url, Token: b.token, Workers: b.workers, Pools: b.pools, Duration: 2 * time.Minute},
		Count:  int64(b.workers),
	})
	if err != nil {
		return fmt.Errorf("seed heartbeats: %w", err)
	}
	if rep.seed.Errors > 0 || rep.seed.Requests != int64(b.workers) {
		return fmt.Errorf("seed heartbeats: %d of %d sent, %d failed (first error: %s)", rep.seed.Requests, b.workers, rep.seed.Errors, rep.seed.FirstError)
	}
	fmt.Fprintf(stdout, "seeded %d workers in %s\n", rep.seed.Requests, rep.seed.Duration.Round(time.Millisecond))

	if err := b.readPage(ctx, httpClient, rep); err != nil {
		return err
	}
	tracker := load.NewTracker(rep.pageIDs)

	streamCtx, closeStreams := context.WithCancel(ctx)
	defer closeStreams()
	openStart := time.Now()
	phase := &atomic.Int32{}
	streams, err := b.openStreams(streamCtx, tracker, phase)
	if err != nil {
		return err
	}
	rep.openTime = time.Since(openStart)
	fmt.Fprintf(stdout, "opened %d event streams in %s\n", len(streams), rep.openTime.Round(time.Millisecond))

	scraper := startScraper(ctx, httpClient, b.url, b.token, b.scrapeInterval)
	// Let the pushes of the seed heartbeats pass, so that the run starts
	// from quiet streams.
	if !sleepFor(ctx, settleTime) {
		return ctx.Err()
	}

	atRunStart, err := scrapeMetrics(ctx, httpClient, b.url, b.token)
	if err != nil {
		return err
	}
	phase.Store(phaseRun)
	err = b.runHeartbeats(ctx, httpClient, tracker, streams, rep)
	phase.Store(phaseSettle)
	if err != nil {
		return err
	}
	after, err := scrapeMetrics(ctx, httpClient, b.url, b.token)
	if err != nil {
		return err
	}
	rep.serverCores = (after[metricCPU] - atRunStart[metricCPU]) / rep.runWall.Seconds()
	rep.dropped = after[metricDropped] - before[metricDropped]

	time.Sleep(settleTime)
	for _, s := range streams {
		if s.ended() {
			rep.endedEarly++
		}
	}
	closeStreams()
	for _, s := range streams {
		<-s.done
	}
	rep.maxRSS, rep.rssScrapes, rep.scrapeErrors = scraper.stop()
	collectStreams(streams, rep)

	// Time the overview again with the whole fleet and no load.
	sumBefore, err := scrapeMetrics(ctx, httpClient, b.url, b.token)
	if err != nil {
		return err
	}
	rep.overviewIdle, rep.overviewBytes, err = timeOverview(ctx, httpClient, b.url+overviewPath, b.token, b.overviewRequests)
	if err != nil {
		return err
	}
	sumAfter, err := scrapeMetrics(ctx, httpClient, b.url, b.token)
	if err != nil {
		return err
	}
	sumKey, countKey := fmt.Sprintf(metricOverviewNs, "sum"), fmt.Sprintf(metricOverviewNs, "count")
	if n := sumAfter[countKey] - sumBefore[countKey]; n > 0 {
		rep.overviewServerMean = time.Duration((sumAfter[sumKey] - sumBefore[sumKey]) / n * float64(time.Second))
	}

	rep.loadAverageEnd = loadAverage()
	rep.print(stdout, b)
	return nil
}

// readPage reads the ids that the overview's first page shows, from the API
// list with the same default filter (sorted by id, 100 rows).
func (b *dashboardBench) readPage(ctx context.Context, client *http.Client, rep *dashboardReport) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/api/workers", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+b.token)
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("list workers: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("list workers: HTTP %d", res.StatusCode)
	}
	var list struct {
		Workers []struct {
			ID string `json:"id"`
		} `json:"workers"`
		Total int `json:"total"`
	}
	if err := json.NewDecoder(res.Body).Decode(&list); err != nil {
		return fmt.Errorf("decode worker list: %w", err)
	}
	for _, w := range list.Workers {
		rep.pageIDs = append(rep.pageIDs, w.ID)
	}
	if len(rep.pageIDs) == 0 {
		return errors.New("list workers: the first page is empty after seeding")
	}

	expected := load.FirstIDs(load.WorkerIDs(b.workers, b.pools), len(rep.pageIDs))
	if !slices.Equal(expected, rep.pageIDs) {
		rep.pageNote = fmt.Sprintf("the server holds %d workers, and page 1 is not only this run's workers: stale data in the store?", list.Total)
	}
	return nil
}

// dashboardStream is one open overview stream and its bookkeeping. Only its
// reader goroutine touches the cursors until done is closed.
type dashboardStream struct {
	stream *load.Stream
	// byArrival counts an event as reporting every heartbeat sent before it
	// arrived. byHeartbeat counts only the heartbeats sent before the
	// heartbeat time that the row shows, rounded up to the second.
	byArrival, byHeartbeat *load.Cursor
	rowsWithoutTime        int64

	// phase is the benchmark's phase, and tallies counts the events
	// received in phaseRun by kind.
	phase   *atomic.Int32
	tallies map[string]*eventTally

	firstTable chan struct{}
	gotTable   bool
	done       chan struct{}
	err        error

	mu       sync.Mutex
	finished bool
}

var rowEventPrefix = views.RowEvent("")

// Phases of a benchmark run. Row events count only from phaseRun on, when
// the tracker records heartbeats, and bytes only in phaseRun. In
// phaseSettle the streams are still read, so that heartbeats sent at the
// end of the run are seen.
const (
	phaseBefore int32 = iota
	phaseRun
	phaseSettle
)

// eventTally counts the events of one kind and their bytes as sent: the
// event and data lines with their field names and the ending blank line.
type eventTally struct {
	events, bytes int64
}

// eventKind groups the row events of all workers as "row-*".
func eventKind(name string) string {
	if strings.HasPrefix(name, rowEventPrefix) {
		return rowEventPrefix + "*"
	}
	return name
}

func (s *dashboardStream) handle(ev load.Event) {
	phase := s.phase.Load()
	if phase == phaseRun {
		tally := s.tallies[eventKind(ev.Name)]
		if tally == nil {
			tally = &eventTally{}
			s.tallies[eventKind(ev.Name)] = tally
		}
		tally.events++
		lines := int64(bytes.Count(ev.Data, []byte("\n")) + 1)
		eventLine := int64(len("event: ") + len(ev.Name) + 1)
		// ev.Data has a "\n" between lines, and each line ends with one.
		dataLines := lines*int64(len("data: ")) + int64(len(ev.Data)) + 1
		tally.bytes += eventLine + dataLines + 1 // and the blank line
	}

	switch {
	case strings.HasPrefix(ev.Name, rowEventPrefix) && phase != phaseBefore:
		id := ev.Name[len(rowEventPrefix):]
		s.byArrival.Deliver(id, ev.Received, ev.Received)
		cutoff := ev.Received
		if heartbeatAt, ok := rowHeartbeatTime(ev.Data); ok {
			cutoff = minTime(cutoff, heartbeatAt.Add(time.Second))
		} else {
			s.rowsWithoutTime++
		}
		s.byHeartbeat.Deliver(id, cutoff, ev.Received)
	case ev.Name == views.EventWorkers:
		s.byArrival.DeliverAll(ev.Received)
		s.byHeartbeat.DeliverAll(ev.Received)
		if !s.gotTable {
			s.gotTable = true
			close(s.firstTable)
		}
	}
}

func (s *dashboardStream) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finished
}

// rowHeartbeatTime returns the last heartbeat time that a worker row shows
// in its <time datetime="..."> element, which has whole seconds.
func rowHeartbeatTime(row []byte) (time.Time, bool) {
	const attr = `datetime="`
	i := bytes.Index(row, []byte(attr))
	if i < 0 {
		return time.Time{}, false
	}
	value := row[i+len(attr):]
	end := bytes.IndexByte(value, '"')
	if end < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, string(value[:end]))
	return t, err == nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// openStreams opens b.streams overview streams, each on its own HTTP/1.1
// connection, starts a reader for each and waits until every stream has
// received its first workers table.
func (b *dashboardBench) openStreams(ctx context.Context, tracker *load.Tracker, phase *atomic.Int32) ([]*dashboardStream, error) {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	transport := &http.Transport{
		Protocols:             protocols,
		DisableKeepAlives:     true, // a closed stream's connection is never reused
		DisableCompression:    true,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	client := &http.Client{Transport: transport}

	streams := make([]*dashboardStream, b.streams)
	openCtx, cancel := context.WithTimeout(ctx, b.streamOpenTimeout)
	defer cancel()
	slots := make(chan struct{}, b.openParallelism)
	errs := make([]error, b.streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			select {
			case slots <- struct{}{}:
			case <-openCtx.Done():
				errs[i] = openCtx.Err()
				return
			}
			defer func() { <-slots }()
			stream, err := load.OpenStream(ctx, client, b.url+overviewEvents, b.token)
			if err != nil {
				errs[i] = err
				return
			}
			s := &dashboardStream{
				stream: stream, byArrival: tracker.NewCursor(), byHeartbeat: tracker.NewCursor(),
				phase: phase, tallies: map[string]*eventTally{},
				firstTable: make(chan struct{}), done: make(chan struct{}),
			}
			streams[i] = s
			go func() {
				defer close(s.done)
				s.err = stream.Read(s.handle)
				s.mu.Lock()
				s.finished = true
				s.mu.Unlock()
			}()
			// Hold the slot until the first table arrives, so that the
			// server renders at most open-parallelism initial states at once.
			select {
			case <-s.firstTable:
			case <-s.done:
				errs[i] = fmt.Errorf("event stream %d ended before its first workers table: %v", i, s.err)
			case <-openCtx.Done():
				errs[i] = fmt.Errorf("event stream %d: no workers table within %s", i, b.streamOpenTimeout)
			}
		})
	}
	wg.Wait()

	if err := errors.Join(errs...); err != nil {
		for _, s := range streams {
			if s != nil {
				_ = s.stream.Close()
			}
		}
		return nil, fmt.Errorf("open event streams: %w", err)
	}
	return streams, nil
}

// runHeartbeats sends the heartbeat run, records the page's send times in
// tracker and the streams' bytes over the run, and times the overview
// halfway through.
func (b *dashboardBench) runHeartbeats(ctx context.Context, client *http.Client, tracker *load.Tracker, streams []*dashboardStream, rep *dashboardReport) error {
	bytesBefore := make([]int64, len(streams))
	for i, s := range streams {
		bytesBefore[i] = s.stream.Bytes()
	}

	var loadedErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if !sleepFor(ctx, b.duration/2) {
			return
		}
		rep.overviewLoaded, _, loadedErr = timeOverview(ctx, client, b.url+overviewPath, b.token, b.overviewRequests)
	})

	start := time.Now()
	cpuStart, cpuKnown := processCPU()
	var err error
	rep.heartbeats, err = load.SendHeartbeats(ctx, load.Heartbeats{
		Config: load.Config{URL: b.url, Token: b.token, Workers: b.workers, Pools: b.pools, Rate: b.rate, Duration: b.duration, Concurrency: b.concurrency},
		First:  int64(b.workers), // after the seed, so job counters keep growing
		OnSend: tracker.Sent,
		OnFail: tracker.Failed,
	})
	rep.runEnd = time.Now()
	rep.runWall = rep.runEnd.Sub(start)
	if cpuEnd, ok := processCPU(); ok && cpuKnown {
		rep.benchCores = (cpuEnd - cpuStart).Seconds() / rep.runWall.Seconds()
	}
	for i, s := range streams {
		perMinute := float64(s.stream.Bytes()-bytesBefore[i]) / rep.runWall.Minutes()
		rep.streamPerMinute = append(rep.streamPerMinute, perMinute)
	}
	slices.Sort(rep.streamPerMinute)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("heartbeat run: %w", err)
	}
	if loadedErr != nil {
		return fmt.Errorf("overview during the run: %w", loadedErr)
	}
	return nil
}

// collectStreams merges the streams' cursors into the report. Every reader
// must have ended.
func collectStreams(streams []*dashboardStream, rep *dashboardReport) {
	var byArrival, byHeartbeat []time.Duration
	rep.tallies = map[string]*eventTally{}
	for _, s := range streams {
		for kind, tally := range s.tallies {
			total := rep.tallies[kind]
			if total == nil {
				total = &eventTally{}
				rep.tallies[kind] = total
			}
			total.events += tally.events
			total.bytes += tally.bytes
		}
		byArrival = append(byArrival, s.byArrival.Latencies()...)
		byHeartbeat = append(byHeartbeat, s.byHeartbeat.Latencies()...)
		rep.rowEvents += s.byArrival.RowEvents
		rep.noNewByArrival += s.byArrival.NoNewHeartbeat
		rep.noNewByHeartbeat += s.byHeartbeat.NoNewHeartbeat
		rep.tableEvents += s.byArrival.TableEvents
		rep.rowsWithoutTime += s.rowsWithoutTime
		// The streams were read for settleTime after the last heartbeat.
		rep.unseen += s.byHeartbeat.Unseen(rep.runEnd)
	}
	rep.byArrival = load.SummarizeLatencies(byArrival)
	rep.byHeartbeat = load.SummarizeLatencies(byHeartbeat)
}

// timeOverview times n sequential GETs of the overview and returns their
// latency percentiles and the size of the last body.
func timeOverview(ctx context.Context, client *http.Client, url, token string, n int) (load.LatencySummary, int, error) {
	latencies := make([]time.Duration, 0, n)
	size := 0
	for range n {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return load.LatencySummary{}, 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		start := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return load.LatencySummary{}, 0, fmt.Errorf("GET %s: %w", url, err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return load.LatencySummary{}, 0, fmt.Errorf("GET %s: read body: %w", url, err)
		}
		if res.StatusCode != http.StatusOK {
			return load.LatencySummary{}, 0, fmt.Errorf("GET %s: HTTP %d", url, res.StatusCode)
		}
		latencies = append(latencies, time.Since(start))
		size = len(body)
	}
	return load.SummarizeLatencies(latencies), size, nil
}

// metricValues maps each sample line of a Prometheus text scrape, name and
// labels as written, to its value.
type metricValues map[string]float64

// scrapeMetrics reads /metrics with the bearer token.
func scrapeMetrics(ctx context.Context, client *http.Client, base, token string) (metricValues, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape /metrics: HTTP %d (is the token right?)", res.StatusCode)
	}

	values := metricValues{}
	scanner := bufio.NewScanner(res.Body)
	scanner.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			values[line[:i]] = v
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}

	if _, ok := values[metricRSS]; !ok {
		return nil, fmt.Errorf("scrape /metrics: no %s sample; the server does not export process metrics", metricRSS)
	}
	return values, nil
}

// scraper samples the server's resident memory until stopped.
type scraper struct {
	cancel context.CancelFunc
	done   chan struct{}
	maxRSS float64
	count  int
	errors int
}

func startScraper(ctx context.Context, client *http.Client, base, token string, interval time.Duration) *scraper {
	ctx, cancel := context.WithCancel(ctx)
	s := &scraper{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			values, err := scrapeMetrics(ctx, client, base, token)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.errors++
			} else {
				s.count++
				s.maxRSS = max(s.maxRSS, values[metricRSS])
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return s
}

// stop ends the scrapes and returns the maximum resident memory in bytes,
// the number of scrapes and the number of failed scrapes.
func (s *scraper) stop() (maxRSS float64, count, errors int) {
	s.cancel()
	<-s.done
	return s.maxRSS, s.count, s.errors
}

func sleepFor(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// loadAverage returns the 1, 5 and 15 minute load averages from
// /proc/loadavg, or "unknown" where there is no such file.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

// print writes the report.
func (r *dashboardReport) print(w io.Writer, b *dashboardBench) {
	fmt.Fprintf(w, "\npage 1: %d workers, %s … %s\n", len(r.pageIDs), r.pageIDs[0], r.pageIDs[len(r.pageIDs)-1])
	if r.pageNote != "" {
		fmt.Fprintf(w, "WARNING: %s\n", r.pageNote)
	}
	fmt.Fprintf(w, "heartbeats (latency from send to response):\n%s", indent(r.heartbeats.String()))

	fmt.Fprintf(w, "heartbeat -> row event on every stream (target p95 <= 1.5s):\n")
	fmt.Fprintf(w, "  matched by arrival:        %s\n", r.byArrival)
	fmt.Fprintf(w, "  matched by heartbeat time: %s\n", r.byHeartbeat)
	fmt.Fprintf(w, "  row events %d, of which reported no new heartbeat: %d by arrival, %d by heartbeat time\n",
		r.rowEvents, r.noNewByArrival, r.noNewByHeartbeat)
	fmt.Fprintf(w, "  workers tables %d, rows without a heartbeat time %d\n", r.tableEvents, r.rowsWithoutTime)
	fmt.Fprintf(w, "  heartbeats never seen by a stream %d (summed over streams)\n", r.unseen)
	fmt.Fprintf(w, "  streams ended by the server %d of %d; server dropped %.0f slow clients\n", r.endedEarly, b.streams, r.dropped)

	fmt.Fprintf(w, "server during the run: %.2f cores (process_cpu_seconds_total over %s)\n", r.serverCores, r.runWall.Round(time.Millisecond))
	fmt.Fprintf(w, "  resident memory max %.1f MB over %d scrapes, %d failed (target < 300 MB)\n", r.maxRSS/1e6, r.rssScrapes, r.scrapeErrors)
	if r.benchCores > 0 {
		fmt.Fprintf(w, "benchmark process during the run: %.2f cores, on the same machine\n", r.benchCores)
	}
	fmt.Fprintf(w, "load average %s at the start, %s at the end\n", r.loadAverageStart, r.loadAverageEnd)

	fmt.Fprintf(w, "overview GET with %d workers (target < 50ms):\n", b.workers)
	fmt.Fprintf(w, "  after the run:  p50 %s, p95 %s over %d requests; server mean %s\n",
		r.overviewIdle.P50.Round(10*time.Microsecond), r.overviewIdle.P95.Round(10*time.Microsecond), r.overviewIdle.Count, r.overviewServerMean.Round(10*time.Microsecond))
	fmt.Fprintf(w, "  during the run: p50 %s, p95 %s over %d requests\n",
		r.overviewLoaded.P50.Round(10*time.Microsecond), r.overviewLoaded.P95.Round(10*time.Microsecond), r.overviewLoaded.Count)

	median := r.streamPerMinute[len(r.streamPerMinute)/2]
	polling := float64(r.overviewBytes) * 12
	fmt.Fprintf(w, "bytes per minute to one dashboard (response bodies, without HTTP headers):\n")
	fmt.Fprintf(w, "  event stream: %.1f KB median (min %.1f, max %.1f over %d streams)\n",
		median/1e3, r.streamPerMinute[0]/1e3, r.streamPerMinute[len(r.streamPerMinute)-1]/1e3, len(r.streamPerMinute))
	minutes := r.runWall.Minutes() * float64(len(r.streamPerMinute))
	for _, kind := range slices.Sorted(maps.Keys(r.tallies)) {
		tally := r.tallies[kind]
		fmt.Fprintf(w, "    %-10s %7.1f events, %8.1f KB per stream and minute\n", kind, float64(tally.events)/minutes, float64(tally.bytes)/minutes/1e3)
	}
	fmt.Fprintf(w, "  polling:      %.1f KB (12 × %d bytes, one overview every 5 s)\n", polling/1e3, r.overviewBytes)
	if polling > 0 {
		fmt.Fprintf(w, "  stream / polling = %.2f\n", median/polling)
	}
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "  " + strings.Join(lines, "\n  ") + "\n"
}

// processCPU returns the user and system CPU time of this process from
// /proc/self/stat, or false where there is no such file. The kernel reports
// it in clock ticks of 1/100 s (USER_HZ, 100 on every common Linux build).
func processCPU() (time.Duration, bool) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// The command name in field 2 may contain spaces. The fields after its
	// closing parenthesis start with field 3 (state).
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(fields[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, true
}
