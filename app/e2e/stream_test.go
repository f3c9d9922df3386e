package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"
)

// keepAlive is the event stream's keep-alive interval
// (web.HubOptions.KeepAlive, which cli.Start leaves at its default).
// NOTE: cli.Start does not let a test shorten it, so a vanished client that
// nothing else writes to can take up to two of these to be noticed.
const keepAlive = 15 * time.Second

// streamRequest is what a browser's EventSource sends for the overview.
func streamRequest(addr, query string) string {
	return "GET " + uiPrefix + "/events?" + query + " HTTP/1.1\r\n" +
		"Host: " + addr + "\r\n" +
		"Authorization: " + basicAuth("stream-client") + "\r\n" +
		"Accept: text/event-stream\r\n" +
		"Cache-Control: no-cache\r\n\r\n"
}

// openStream opens an overview event stream on a raw TCP connection and
// reads until the stream's first line, "retry: 2000". The caller owns the
// connection, and nothing reads it afterwards.
func openStream(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(streamRequest(addr, "view=overview"))); err != nil {
		t.Fatalf("send stream request: %v", err)
	}
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("stream request: status line %q, err %v", status, err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: read until the retry line: %v", err)
		}
		if strings.HasPrefix(line, "retry:") {
			break
		}
	}
	conn.SetDeadline(time.Time{})
	return conn
}

// streamGoroutines counts the server's goroutines that serve an event
// stream: the stream writers and the connections that copy their output.
func streamGoroutines() (writers, copiers int) {
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 2)
	for _, g := range strings.Split(buf.String(), "\n\n") {
		switch {
		case strings.Contains(g, "web.(*UI).handleEvents"):
			writers++
		case strings.Contains(g, "fasthttp.writeBodyChunked"):
			copiers++
		}
	}
	return writers, copiers
}

// droppedStreams returns controlplane_event_stream_dropped_total.
func (s *server) droppedStreams() float64 {
	s.t.Helper()
	families, err := s.App().Registry.Gather()
	if err != nil {
		s.t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() == "controlplane_event_stream_dropped_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	s.t.Fatal("metric controlplane_event_stream_dropped_total is not registered")
	return 0
}

func TestStreamClientsVanish(t *testing.T) {
	const clients = 200
	srv := startServer(t, nil)
	hb := heartbeatBody{ID: "w-01", Pool: "billing", Status: "running"}
	srv.heartbeat(hb)
	time.Sleep(2 * hubTick) // let the hub settle

	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	baseClients := srv.App().Hub.Clients()
	baseWriters, baseCopiers := streamGoroutines()

	conns := make([]net.Conn, 0, clients)
	for range clients {
		conns = append(conns, openStream(t, srv.addr))
	}
	if got := srv.App().Hub.Clients(); got != baseClients+clients {
		t.Fatalf("server counts %d streams with %d open; want %d", got, clients, baseClients+clients)
	}
	writers, copiers := streamGoroutines()
	t.Logf("with %d streams open: %d goroutines (%d before), %d stream writers, %d connection copiers",
		clients, runtime.NumGoroutine(), baseGoroutines, writers, copiers)

	// Kill the clients, then make the server write: a heartbeat changes a
	// row that every overview shows.
	for _, c := range conns {
		c.Close()
	}
	closed := time.Now()
	srv.heartbeat(hb)

	// Within two keep-alive periods the subscribers and their goroutines
	// are gone. Heartbeats keep coming, as they would in a live fleet.
	deadline := closed.Add(2 * keepAlive)
	var clientsGone, streamsGone, goroutinesBack time.Duration
	for time.Now().Before(deadline) && (clientsGone == 0 || streamsGone == 0 || goroutinesBack == 0) {
		time.Sleep(500 * time.Millisecond)
		srv.heartbeat(hb)
		if clientsGone == 0 && srv.App().Hub.Clients() == baseClients {
			clientsGone = time.Since(closed)
		}
		if w, c := streamGoroutines(); streamsGone == 0 && w == baseWriters && c == baseCopiers {
			streamsGone = time.Since(closed)
		}
		// fasthttp keeps an idle worker goroutine per served connection for
		// up to 10 s (its MaxIdleWorkerDuration) before it stops it.
		if goroutinesBack == 0 && runtime.NumGoroutine() <= baseGoroutines+10 {
			goroutinesBack = time.Since(closed)
		}
	}
	if clientsGone == 0 {
		t.Errorf("server still counts %d streams %s after all %d clients closed; want %d", srv.App().Hub.Clients(), 2*keepAlive, clients, baseClients)
	} else {
		t.Logf("subscriber count back to %d after %s", baseClients, clientsGone.Round(time.Millisecond))
	}
	if streamsGone == 0 {
		w, c := streamGoroutines()
		t.Errorf("%d stream writers and %d connection copiers still run %s after the clients closed; want %d and %d", w, c, 2*keepAlive, baseWriters, baseCopiers)
	} else {
		t.Logf("stream goroutines gone after %s", streamsGone.Round(time.Millisecond))
	}
	if goroutinesBack == 0 {
		t.Errorf("%d goroutines %s after the clients closed; %d before they connected", runtime.NumGoroutine(), 2*keepAlive, baseGoroutines)
	} else {
		t.Logf("goroutines back to %d±10 after %s", baseGoroutines, goroutinesBack.Round(time.Millisecond))
	}
}

// lineWatcher reads an event stream in the background and reports when a
// line that contains every one of a set of strings arrives.
type lineWatcher struct {
	mu    sync.Mutex
	want  []string
	found chan struct{}
	bytes int
	err   error
}

func watchLines(conn net.Conn) *lineWatcher {
	lw := &lineWatcher{}
	go func() {
		r := bufio.NewReaderSize(conn, 64*1024)
		for {
			line, err := r.ReadString('\n')
			lw.mu.Lock()
			lw.bytes += len(line)
			if err != nil {
				lw.err = err
				lw.mu.Unlock()
				return
			}
			if lw.found != nil && containsAll(line, lw.want...) == "" {
				close(lw.found)
				lw.found = nil
			}
			lw.mu.Unlock()
		}
	}()
	return lw
}

// expect arms the watcher for a line that contains all of want. The
// returned channel closes when such a line arrives.
func (lw *lineWatcher) expect(want ...string) <-chan struct{} {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.want = want
	lw.found = make(chan struct{})
	return lw.found
}

func (lw *lineWatcher) state() (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.bytes, lw.err
}

// heartbeatFleet sends heartbeat(i) for i in 0..n-1, 16 at a time, and
// fails the test if any is rejected.
func heartbeatFleet(t *testing.T, client *http.Client, base string, n int, heartbeat func(i int) heartbeatBody) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	ids := make(chan int, n)
	for i := range n {
		ids <- i
	}
	close(ids)
	for range 16 {
		wg.Go(func() {
			for i := range ids {
				if _, _, err := postHeartbeat(client, base, heartbeat(i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("fleet heartbeat: %v", err)
	}
}

// A client that stops reading must not hold up the others, and once it is
// dropped the server must let go of its connection.
func TestStuckStreamClientDropped(t *testing.T) {
	// The hub's queue per client holds 256 messages, whatever their size.
	// Every overview shows every pool, and a change of any pool's counts
	// pushes the whole pools table. With 300 pools of 128-character names
	// that is about 1 MiB per tick. It soon fills the stuck client's socket
	// buffers (up to 4 MiB with Linux's default tcp_wmem). Then the row
	// messages, one per tick for each of the 100 workers on the page that
	// heartbeated, fill the queue.
	const pools = 300
	srv := startServer(t, nil)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)
	poolWorker := func(status string) func(i int) heartbeatBody {
		return func(i int) heartbeatBody {
			name := fmt.Sprintf("pool-%03d-", i)
			name += strings.Repeat("p", 128-len(name))
			return heartbeatBody{ID: fmt.Sprintf("x-%03d", i), Pool: name, Status: status}
		}
	}
	heartbeatFleet(t, client, srv.URL(), pools, poolWorker("running"))
	srv.heartbeat(heartbeatBody{ID: "w-probe", Pool: "billing", Status: "running"})
	time.Sleep(2 * hubTick)

	healthyConn := openStream(t, srv.addr)
	t.Cleanup(func() { healthyConn.Close() })
	healthy := watchLines(healthyConn)

	// The stuck client sends its request and never reads again.
	stuck, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stuck.Close() })
	stuck.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := stuck.Write([]byte(streamRequest(srv.addr, "view=overview"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() string {
		if n := srv.App().Hub.Clients(); n != 2 {
			return fmt.Sprintf("2 open streams (server counts %d)", n)
		}
		return ""
	})
	droppedBefore := srv.droppedStreams()

	// Each round every worker heartbeats with its status flipped between
	// running and paused.
	var probed bool
	rounds := 0
	for ; rounds < 20 && srv.App().Hub.Clients() == 2; rounds++ {
		heartbeatFleet(t, client, srv.URL(), pools, poolWorker([]string{"paused", "running"}[rounds%2]))
		time.Sleep(hubTick)

		if rounds == 2 {
			// While the stuck client's queue fills, a change still reaches
			// the healthy client within about two ticks.
			probed = true
			seen := healthy.expect(`id="row-w-probe"`, `data-status="paused"`)
			sent := time.Now()
			srv.heartbeat(heartbeatBody{ID: "w-probe", Pool: "billing", Status: "paused"})
			select {
			case <-seen:
				t.Logf("healthy client saw the change %s after the heartbeat", time.Since(sent).Round(time.Millisecond))
			case <-time.After(2*hubTick + 500*time.Millisecond):
				n, err := healthy.state()
				t.Fatalf("healthy client did not see w-probe paused within %s while another client was stuck (read %d bytes, err %v)", 2*hubTick+500*time.Millisecond, n, err)
			}
		}
	}
	received, _ := healthy.state()
	t.Logf("the healthy client read %d KiB in %d rounds", received/1024, rounds)
	if !probed {
		t.Errorf("the stuck client was dropped before the healthy one could be probed")
	}
	if n := srv.App().Hub.Clients(); n != 1 {
		t.Fatalf("after %d rounds the server still counts %d streams; the stuck client should be dropped once its buffer is full", rounds, n)
	}
	if dropped := srv.droppedStreams() - droppedBefore; dropped != 1 {
		t.Errorf("controlplane_event_stream_dropped_total grew by %v; want 1", dropped)
	}
	t.Logf("stuck client dropped after %d rounds", rounds)
	if _, err := healthy.state(); err != nil {
		t.Errorf("the healthy stream ended: %v", err)
	}

	// Dropped, the stuck client must not keep a goroutine blocked on its
	// socket: its connection should be closed, or time out, within two
	// keep-alive periods even though the peer never reads.
	dropped := time.Now()
	waitFor(t, 2*keepAlive, func() string {
		if writers, copiers := streamGoroutines(); writers != 1 || copiers != 1 {
			return fmt.Sprintf("the server to release the dropped client's connection: %d stream writers and %d connection copiers run for 1 open stream (%s after the drop)",
				writers, copiers, time.Since(dropped).Round(time.Second))
		}
		return ""
	})
}
