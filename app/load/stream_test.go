package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// readAll parses text with ReadEvents and returns the events, with Data
// copied because the reader reuses its buffer.
func readAll(t *testing.T, text string) []Event {
	t.Helper()
	var events []Event
	err := ReadEvents(strings.NewReader(text), func(ev Event) {
		ev.Data = []byte(string(ev.Data))
		events = append(events, ev)
	})
	if err != nil {
		t.Fatalf("ReadEvents: %v", err)
	}
	return events
}

func TestReadEventsFields(t *testing.T) {
	text := "retry: 2000\n\n" +
		": keep-alive\n\n" +
		"event: row-a\ndata: <tr>\ndata: </tr>\n\n" +
		"id: 7\ndata:no space\n\n" +
		"event: named-without-data\n\n" +
		"event: crlf\r\ndata: x\r\n\r\n" +
		"event: cut-off\ndata: never ended\n"

	events := readAll(t, text)

	want := []struct{ name, data string }{
		{"row-a", "<tr>\n</tr>"},
		{"message", "no space"},
		{"crlf", "x"},
	}
	if len(events) != len(want) {
		t.Fatalf("got %d events %+v, want %d", len(events), events, len(want))
	}
	for i, w := range want {
		if events[i].Name != w.name {
			t.Errorf("event %d name = %q, want %q", i, events[i].Name, w.name)
		}
		if string(events[i].Data) != w.data {
			t.Errorf("event %d data = %q, want %q", i, events[i].Data, w.data)
		}
		if events[i].Received.IsZero() {
			t.Errorf("event %d has no receive time", i)
		}
	}
}

func TestReadEventsLongLine(t *testing.T) {
	// A whole workers table is one data line, longer than the read buffer.
	long := strings.Repeat("<td>x</td>", 20_000)
	text := "event: workers\ndata: " + long + "\n\nevent: after\ndata: ok\n\n"

	events := readAll(t, text)

	if len(events) != 2 {
		t.Fatalf("got %d events, want 2", len(events))
	}
	if events[0].Name != "workers" || string(events[0].Data) != long {
		t.Errorf("first event = %q with %d data bytes, want workers with %d", events[0].Name, len(events[0].Data), len(long))
	}
	if events[1].Name != "after" || string(events[1].Data) != "ok" {
		t.Errorf("second event = %q %q, want after ok", events[1].Name, events[1].Data)
	}
}

func TestReadEventsReturnsReadError(t *testing.T) {
	failing := io.MultiReader(strings.NewReader("event: a\ndata: 1\n\n"), errorReader{})
	count := 0

	err := ReadEvents(failing, func(Event) { count++ })

	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("err = %v, want the read error", err)
	}
	if count != 1 {
		t.Errorf("handled %d events before the error, want 1", count)
	}
}

type errorReader struct{}

func (errorReader) Read([]byte) (int, error) { return 0, fmt.Errorf("connection reset") }

// sseServer is an event stream stub: each string sent on push is written
// to every open stream and flushed.
type sseServer struct {
	*httptest.Server
	push    chan string
	written chan int // bytes written per push
}

func newSSEServer(t *testing.T) *sseServer {
	t.Helper()
	s := &sseServer{push: make(chan string), written: make(chan int, 100)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("view") == "wrong-type" {
			_, _ = io.WriteString(w, "<html>")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case msg, ok := <-s.push:
				if !ok {
					return
				}
				n, _ := io.WriteString(w, msg)
				w.(http.Flusher).Flush()
				s.written <- n
			}
		}
	}))
	t.Cleanup(func() {
		s.CloseClientConnections()
		s.Close()
	})
	return s
}

func TestStreamCountsBytesAndEvents(t *testing.T) {
	srv := newSSEServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := OpenStream(ctx, srv.Client(), srv.URL+"/events", testToken)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer stream.Close()
	names := make(chan string, 10)
	readDone := make(chan error, 1)
	go func() { readDone <- stream.Read(func(ev Event) { names <- ev.Name }) }()

	total := 0
	for _, msg := range []string{"retry: 2000\n\n", "event: row-a\ndata: 1\n\n", ": keep-alive\n\n", "event: summary\ndata: 2\n\n"} {
		srv.push <- msg
		total += <-srv.written
	}
	got := []string{<-names, <-names}
	close(srv.push)
	if err := <-readDone; err != nil {
		t.Errorf("Read: %v, want nil at the end of the stream", err)
	}

	if !slices.Equal(got, []string{"row-a", "summary"}) {
		t.Errorf("events = %v, want row-a then summary", got)
	}
	if stream.Events() != 2 {
		t.Errorf("Events() = %d, want 2", stream.Events())
	}
	if stream.Bytes() != int64(total) {
		t.Errorf("Bytes() = %d, want the %d bytes the server wrote", stream.Bytes(), total)
	}
}

func TestOpenStreamRejectsBadResponses(t *testing.T) {
	srv := newSSEServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := OpenStream(ctx, srv.Client(), srv.URL+"/events", "wrong-token")
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong token: err = %v, want HTTP 401", err)
	}
	_, err = OpenStream(ctx, srv.Client(), srv.URL+"/events?view=wrong-type", testToken)
	if err == nil || !strings.Contains(err.Error(), "text/event-stream") {
		t.Errorf("HTML response: err = %v, want a Content-Type error", err)
	}
}

func TestCursorDeliverLatency(t *testing.T) {
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	tracker := NewTracker([]string{"a", "b"})
	tracker.Sent("a", at(0))
	tracker.Sent("a", at(100))
	tracker.Sent("b", at(50))
	tracker.Sent("untracked", at(10))
	cursor := tracker.NewCursor()

	// One event delivers both heartbeats of a, and latency counts from the
	// oldest.
	latency, ok := cursor.Deliver("a", at(900), at(900))
	if !ok || latency != 900*time.Millisecond {
		t.Errorf("first event of a: latency %v, %v; want 900ms, true", latency, ok)
	}
	// Nothing new for a, so no latency.
	if _, ok := cursor.Deliver("a", at(1900), at(1900)); ok {
		t.Errorf("second event of a reported a latency, want none")
	}
	// A heartbeat sent after the cutoff waits for a later event.
	tracker.Sent("a", at(2000))
	if _, ok := cursor.Deliver("a", at(1999), at(2100)); ok {
		t.Errorf("event with cutoff before the heartbeat reported a latency, want none")
	}
	latency, ok = cursor.Deliver("a", at(3000), at(3000))
	if !ok || latency != time.Second {
		t.Errorf("event after the third heartbeat: latency %v, %v; want 1s, true", latency, ok)
	}
	if _, ok := cursor.Deliver("untracked", at(3000), at(3000)); ok {
		t.Errorf("untracked id reported a latency, want none")
	}

	if got := cursor.Latencies(); !slices.Equal(got, []time.Duration{900 * time.Millisecond, time.Second}) {
		t.Errorf("Latencies() = %v, want [900ms 1s]", got)
	}
	if cursor.RowEvents != 4 {
		t.Errorf("RowEvents = %d, want 4 (untracked ids do not count)", cursor.RowEvents)
	}
	if cursor.NoNewHeartbeat != 2 {
		t.Errorf("NoNewHeartbeat = %d, want 2", cursor.NoNewHeartbeat)
	}
	if n := cursor.Unseen(at(5000)); n != 1 {
		t.Errorf("Unseen = %d, want 1 (b's heartbeat)", n)
	}
}

func TestCursorsAreIndependent(t *testing.T) {
	base := time.Now()
	tracker := NewTracker([]string{"a"})
	tracker.Sent("a", base)
	first, second := tracker.NewCursor(), tracker.NewCursor()

	l1, ok1 := first.Deliver("a", base.Add(time.Second), base.Add(time.Second))
	l2, ok2 := second.Deliver("a", base.Add(2*time.Second), base.Add(2*time.Second))

	if !ok1 || l1 != time.Second {
		t.Errorf("first stream: %v, %v; want 1s, true", l1, ok1)
	}
	if !ok2 || l2 != 2*time.Second {
		t.Errorf("second stream: %v, %v; want 2s, true", l2, ok2)
	}
}

func TestCursorSkipsFailedHeartbeats(t *testing.T) {
	base := time.Now()
	tracker := NewTracker([]string{"a"})
	tracker.Sent("a", base)
	tracker.Sent("a", base.Add(300*time.Millisecond))
	tracker.Failed("a", base)
	cursor := tracker.NewCursor()

	latency, ok := cursor.Deliver("a", base.Add(time.Second), base.Add(time.Second))

	if !ok || latency != 700*time.Millisecond {
		t.Errorf("latency %v, %v; want 700ms from the heartbeat that did not fail", latency, ok)
	}
	tracker.Sent("a", base.Add(2*time.Second))
	tracker.Failed("a", base.Add(2*time.Second))
	if n := cursor.Unseen(base.Add(5 * time.Second)); n != 0 {
		t.Errorf("Unseen = %d, want 0: a failed heartbeat cannot be seen", n)
	}
}

func TestTrackerSortsOutOfOrderSends(t *testing.T) {
	base := time.Now()
	tracker := NewTracker([]string{"a"})
	tracker.Sent("a", base.Add(200*time.Millisecond))
	tracker.Sent("a", base)
	cursor := tracker.NewCursor()

	latency, ok := cursor.Deliver("a", base.Add(100*time.Millisecond), base.Add(time.Second))

	if !ok || latency != time.Second {
		t.Errorf("latency %v, %v; want 1s from the earlier send", latency, ok)
	}
	if n := cursor.Unseen(base.Add(time.Second)); n != 1 {
		t.Errorf("Unseen = %d, want 1: the later send is after the cutoff", n)
	}
}

func TestCursorDeliverAll(t *testing.T) {
	base := time.Now()
	tracker := NewTracker([]string{"a", "b"})
	tracker.Sent("a", base)
	tracker.Sent("b", base)
	cursor := tracker.NewCursor()

	cursor.DeliverAll(base.Add(time.Second))

	if cursor.TableEvents != 1 {
		t.Errorf("TableEvents = %d, want 1", cursor.TableEvents)
	}
	if len(cursor.Latencies()) != 0 {
		t.Errorf("Latencies() = %v, want none from a table", cursor.Latencies())
	}
	if _, ok := cursor.Deliver("a", base.Add(2*time.Second), base.Add(2*time.Second)); ok {
		t.Errorf("row event after the table reported a latency, want none")
	}
}

// TestStreamLatencyEndToEnd sends "heartbeats" through a tracker, has a
// stub server push the row event 200 ms later, and checks the latency that
// the reader measures.
func TestStreamLatencyEndToEnd(t *testing.T) {
	srv := newSSEServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := OpenStream(ctx, srv.Client(), srv.URL+"/events", testToken)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer stream.Close()
	tracker := NewTracker([]string{"w1"})
	cursor := tracker.NewCursor()
	delivered := make(chan time.Duration, 10)
	go func() {
		_ = stream.Read(func(ev Event) {
			id := strings.TrimPrefix(ev.Name, "row-")
			if latency, ok := cursor.Deliver(id, ev.Received, ev.Received); ok {
				delivered <- latency
			}
		})
	}()

	const delay = 200 * time.Millisecond
	tracker.Sent("w1", time.Now())
	time.Sleep(delay)
	srv.push <- "event: row-w1\ndata: <tr></tr>\n\n"
	<-srv.written

	select {
	case latency := <-delivered:
		if latency < delay || latency > delay+time.Second {
			t.Errorf("latency %v, want between %v and %v", latency, delay, delay+time.Second)
		}
	case <-ctx.Done():
		t.Fatal("no latency measured within 5s")
	}
}

func TestSummarizeLatencies(t *testing.T) {
	latencies := make([]time.Duration, 0, 100)
	for i := 100; i >= 1; i-- {
		latencies = append(latencies, time.Duration(i)*time.Millisecond)
	}

	s := SummarizeLatencies(latencies)

	want := LatencySummary{Count: 100, P50: 50 * time.Millisecond, P95: 95 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if s != want {
		t.Errorf("SummarizeLatencies = %+v, want %+v", s, want)
	}
	if empty := SummarizeLatencies(nil); empty != (LatencySummary{}) {
		t.Errorf("SummarizeLatencies(nil) = %+v, want zero", empty)
	}
}

func TestFirstIDsSortsByteWise(t *testing.T) {
	ids := WorkerIDs(30, 2)

	first := FirstIDs(ids, 4)

	want := []string{"load-pool-1-1", "load-pool-1-10", "load-pool-1-11", "load-pool-1-12"}
	if !slices.Equal(first, want) {
		t.Errorf("FirstIDs = %v, want %v", first, want)
	}
	if ids[0] != "load-pool-1-1" || ids[1] != "load-pool-2-1" {
		t.Errorf("WorkerIDs starts %v, want rotation order load-pool-1-1, load-pool-2-1", ids[:2])
	}
}

func TestSendHeartbeatsCountAndFirst(t *testing.T) {
	hs := newHeartbeatServer(t)
	var mu sync.Mutex
	var sent []string
	h := Heartbeats{
		Config: Config{URL: hs.URL, Token: testToken, Concurrency: 3, Duration: 5 * time.Second, Workers: 4, Pools: 2},
		First:  4,
		Count:  8,
		OnSend: func(id string, at time.Time) {
			mu.Lock()
			sent = append(sent, id)
			mu.Unlock()
		},
	}

	result, err := SendHeartbeats(context.Background(), h)
	if err != nil {
		t.Fatalf("SendHeartbeats: %v", err)
	}

	if result.Requests != 8 || result.Errors != 0 {
		t.Errorf("Requests %d, Errors %d (first: %s); want 8 and 0", result.Requests, result.Errors, result.FirstError)
	}
	bodies := hs.heartbeats()
	if len(bodies) != 8 {
		t.Fatalf("server got %d heartbeats, want 8", len(bodies))
	}
	perWorker := map[string]int{}
	for _, hb := range bodies {
		perWorker[hb.ID]++
		// Heartbeats 4 to 11 are beats 1 and 2 of each worker.
		if p := hb.Metrics["jobs_processed"]; p != jobsPerHeartbeat && p != 2*jobsPerHeartbeat {
			t.Errorf("worker %s jobs_processed = %v, want %d or %d", hb.ID, p, jobsPerHeartbeat, 2*jobsPerHeartbeat)
		}
	}
	for _, id := range WorkerIDs(4, 2) {
		if perWorker[id] != 2 {
			t.Errorf("worker %s got %d heartbeats, want 2", id, perWorker[id])
		}
	}
	slices.Sort(sent)
	ids := make([]string, 0, len(bodies))
	for _, hb := range bodies {
		ids = append(ids, hb.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(sent, ids) {
		t.Errorf("OnSend ids %v, want the ids the server received %v", sent, ids)
	}
}

func TestSendHeartbeatsReportsFailures(t *testing.T) {
	hs := newHeartbeatServer(t)
	hs.status = func(n int64) int {
		if n%2 == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	var mu sync.Mutex
	failed := 0
	h := Heartbeats{
		Config: Config{URL: hs.URL, Token: testToken, Concurrency: 1, Duration: 5 * time.Second, Workers: 2, Pools: 1},
		Count:  6,
		OnFail: func(string, time.Time) { mu.Lock(); failed++; mu.Unlock() },
	}

	result, err := SendHeartbeats(context.Background(), h)
	if err != nil {
		t.Fatalf("SendHeartbeats: %v", err)
	}

	if result.Errors != 3 || failed != 3 {
		t.Errorf("Errors %d, OnFail calls %d; want 3 and 3", result.Errors, failed)
	}
}

func TestSendHeartbeatsFixedRate(t *testing.T) {
	hs := newHeartbeatServer(t)
	h := Heartbeats{Config: Config{URL: hs.URL, Token: testToken, Concurrency: 4, Duration: 500 * time.Millisecond, Workers: 10, Pools: 1, Rate: 40}}

	result, err := SendHeartbeats(context.Background(), h)
	if err != nil {
		t.Fatalf("SendHeartbeats: %v", err)
	}

	// 40/s for 0.5 s schedules heartbeats at 0, 25, ..., 475 ms.
	if result.Requests != 20 {
		t.Errorf("Requests = %d, want 20 at 40/s for 500ms", result.Requests)
	}
}

func TestSendHeartbeatsRejectsInvalidRuns(t *testing.T) {
	for name, h := range map[string]Heartbeats{
		"healthz target": {Config: Config{URL: "http://127.0.0.1:1", Token: testToken, Duration: time.Second, Target: TargetHealthz}},
		"negative count": {Config: Config{URL: "http://127.0.0.1:1", Token: testToken, Duration: time.Second}, Count: -1},
		"no token":       {Config: Config{URL: "http://127.0.0.1:1", Duration: time.Second}},
	} {
		if _, err := SendHeartbeats(context.Background(), h); err == nil {
			t.Errorf("%s: err = nil, want a validation error", name)
		}
	}
}
