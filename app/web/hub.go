package web

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/a-h/templ"
	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/metrics"
	"github.com/verifier/controlplane/app/service"
	"github.com/verifier/controlplane/views"
)

// HubOptions tune the event hub; zero fields take the defaults.
type HubOptions struct {
	// Tick is how long changes are coalesced before they are pushed.
	// Default 1 s.
	Tick time.Duration
	// KeepAlive is the interval of the comment that finds vanished clients.
	// Default 15 s.
	KeepAlive time.Duration
	// Buffer is how many messages a client may lag behind before it is
	// dropped. Default 256.
	Buffer int
	// OnSettings is called when any replica announces a settings change.
	OnSettings func()
}

// View describes the content of one stream's page.
type View struct {
	Kind     string // "overview", "worker" or "alerts"
	Filter   service.WorkerFilter
	WorkerID string
}

func (v View) key() string {
	switch v.Kind {
	case "overview":
		f := v.Filter
		stale := ""
		if f.Stale != nil {
			stale = map[bool]string{true: "1", false: "0"}[*f.Stale]
		}
		return strings.Join([]string{"overview", f.Pool, f.Status, stale, f.Query, f.Sort, itoa(f.Limit), itoa(f.Offset)}, "\x00")
	case "worker":
		return "worker\x00" + v.WorkerID
	}
	return v.Kind
}

// client is one open event stream.
type client struct {
	view View
	ch   chan []byte
	once sync.Once
	// conn is the client's connection, closed when the hub drops the client.
	conn net.Conn
}

func (c *client) close() { c.once.Do(func() { close(c.ch) }) }

// drop ends a client that cannot keep up. Closing its connection frees the
// stream writer, which may be blocked writing to a peer that stopped reading.
func (c *client) drop() {
	c.close()
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// pageState records the rows last sent to the clients of one overview view.
type pageState struct {
	ids []string
}

// Hub pushes rendered fragments to every open dashboard. Changes from any
// replica arrive over Redis pub/sub, are coalesced for one tick, rendered
// once for all the clients that show them, and sent without ever waiting on
// a client: a client whose buffer is full is dropped.
type Hub struct {
	ui      *UI
	rdb     goredis.UniversalClient
	channel string
	opts    HubOptions
	log     *slog.Logger
	m       *metrics.Metrics

	mu      sync.Mutex
	clients map[*client]struct{}
	pending map[string]struct{}
	// seen is each worker's index entry at the last tick; a difference
	// means a heartbeat arrived (on any replica) or liveness changed.
	seen      map[string]seenEntry
	pages     map[string]*pageState
	lastSent  map[string][]byte // fragment event -> last HTML sent to all
	storeDown bool
	closed    bool
}

// seenEntry is the part of an index entry that the hub compares between ticks.
type seenEntry struct {
	heartbeat time.Time
	status    fleet.State
	stale     bool
}

// NewHub returns a hub that hears changes on channel (the store's); Run
// starts it.
func NewHub(ui *UI, rdb goredis.UniversalClient, channel string, opts HubOptions, m *metrics.Metrics, log *slog.Logger) *Hub {
	if opts.Tick <= 0 {
		opts.Tick = time.Second
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 15 * time.Second
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 256
	}
	return &Hub{
		ui: ui, rdb: rdb, channel: channel, opts: opts, log: log, m: m,
		clients: map[*client]struct{}{}, pending: map[string]struct{}{},
		pages: map[string]*pageState{}, lastSent: map[string][]byte{},
	}
}

// Run receives change announcements and pushes updates until ctx ends, then
// ends every stream.
func (h *Hub) Run(ctx context.Context) {
	go h.receive(ctx)
	ticker := time.NewTicker(h.opts.Tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			h.Close()
			return
		case <-ticker.C:
			h.flush(ctx)
		}
	}
}

// receive subscribes to the events channel; go-redis resubscribes by itself
// after a connection loss, and the hub's tick keeps running meanwhile.
func (h *Hub) receive(ctx context.Context) {
	ps := h.rdb.Subscribe(ctx, h.channel)
	defer ps.Close()
	ch := ps.Channel(goredis.WithChannelSize(10_000))
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			if msg.Payload == "settings" && h.opts.OnSettings != nil {
				h.opts.OnSettings()
			}
			h.mu.Lock()
			h.pending[msg.Payload] = struct{}{}
			h.mu.Unlock()
		}
	}
}

// Subscribe registers a stream for view and queues the current state of
// everything the view shows, so a client that connects or reconnects first
// sees the truth. conn, if not nil, is closed when the client is dropped.
func (h *Hub) Subscribe(ctx context.Context, view View, conn net.Conn) *client {
	c := &client{view: view, ch: make(chan []byte, h.opts.Buffer), conn: conn}
	msgs, ids := h.ui.initialState(ctx, view)
	for _, msg := range msgs {
		c.ch <- msg
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		c.close()
		return c
	}
	h.clients[c] = struct{}{}
	if view.Kind == "overview" {
		if _, ok := h.pages[view.key()]; !ok {
			h.pages[view.key()] = &pageState{ids: ids}
		}
	}
	h.m.StreamClients.Set(float64(len(h.clients)))
	return c
}

// Unsubscribe removes a stream.
func (h *Hub) Unsubscribe(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.m.StreamClients.Set(float64(len(h.clients)))
	h.mu.Unlock()
	c.close()
}

// Clients returns the number of open streams.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// Close ends every stream; browsers reconnect, to another replica when this
// one is shutting down.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.clients {
		c.close()
		delete(h.clients, c)
	}
	h.m.StreamClients.Set(0)
}

// send queues msg for every client that match selects, dropping any client
// that cannot keep up.
func (h *Hub) send(msg []byte, match func(*client) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if !match(c) {
			continue
		}
		select {
		case c.ch <- msg:
		default:
			delete(h.clients, c)
			c.drop()
			h.m.StreamDropped.Inc()
			h.m.StreamClients.Set(float64(len(h.clients)))
		}
	}
}

// flush pushes what changed since the last tick.
func (h *Hub) flush(ctx context.Context) {
	h.mu.Lock()
	topics := h.pending
	h.pending = map[string]struct{}{}
	views := map[string]View{}
	for c := range h.clients {
		views[c.view.key()] = c.view
	}
	for key := range h.pages {
		if _, ok := views[key]; !ok {
			delete(h.pages, key) // no client shows this page any more
		}
	}
	h.mu.Unlock()
	if len(views) == 0 {
		return
	}

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	entries, err := h.ui.svc.Index(ctx)
	if err != nil {
		h.setStoreDown(true)
		return
	}
	if h.setStoreDown(false) {
		h.refreshAll(ctx, views) // Redis is back: resend everything
		return
	}

	changed := map[string]bool{}
	poolChanged := false
	for t := range topics {
		switch {
		case strings.HasPrefix(t, "worker:"):
			changed[strings.TrimPrefix(t, "worker:")] = true
		case strings.HasPrefix(t, "pool:"):
			poolChanged = true
		}
	}
	// Heartbeats are not announced: a worker whose heartbeat time, status or
	// liveness differs from the last tick changed. Liveness changes with
	// time alone, so a worker turning stale is pushed although nothing
	// happened to it.
	grace, now := h.ui.svc.Grace(), h.ui.svc.Now()
	seen := make(map[string]seenEntry, len(entries))
	for _, e := range entries {
		cur := seenEntry{heartbeat: e.LastHeartbeat, status: e.Status, stale: fleet.IsStale(e.LastHeartbeat, now, grace)}
		seen[e.ID] = cur
		if prev, ok := h.seen[e.ID]; !ok || prev != cur {
			changed[e.ID] = true
		}
	}
	for id := range h.seen {
		if _, ok := seen[id]; !ok {
			changed[id] = true // removed
		}
	}
	h.seen = seen

	if len(changed) > 0 || poolChanged {
		h.pushOverviewShared(ctx, entries, views)
	}
	h.pushPages(ctx, entries, views, changed)
	h.pushWorkers(ctx, views, changed)
	if _, ok := topics["audit"]; ok {
		h.pushActivity(ctx, views)
	}
	if _, ok := topics["alerts"]; ok {
		h.pushAlerts(ctx, views)
	}
}

// setStoreDown records Redis' state and sends clients the change. It
// returns true when Redis has just come back.
func (h *Hub) setStoreDown(down bool) (recovered bool) {
	h.mu.Lock()
	was := h.storeDown
	h.storeDown = down
	h.mu.Unlock()
	if was == down {
		return false
	}
	if down {
		h.log.Warn("event hub cannot read the state store; dashboards show a warning")
	} else {
		h.log.Info("event hub reads the state store again")
	}
	h.send(h.ui.event(views.EventStatus, views.StoreStatus(down)), all)
	return was && !down
}

func (h *Hub) refreshAll(ctx context.Context, vs map[string]View) {
	h.mu.Lock()
	h.lastSent = map[string][]byte{}
	h.mu.Unlock()
	for key, v := range vs {
		msgs, _ := h.ui.initialState(ctx, v)
		for _, msg := range msgs {
			h.send(msg, byKey(key))
		}
	}
}

// pushOverviewShared renders the summary and pools once for every overview.
func (h *Hub) pushOverviewShared(ctx context.Context, entries []fleet.PoolEntry, vs map[string]View) {
	if !anyKind(vs, "overview") {
		return
	}
	pools, err := h.ui.svc.PoolsFrom(ctx, entries)
	if err != nil {
		return
	}
	h.sendIfChanged(views.EventPools, views.PoolRows(pools, h.ui.svc.MaxDesiredCount()), kind("overview"))
	h.sendIfChanged(views.EventSummary, views.SummaryCards(h.ui.summary(ctx, pools)), kind("overview"))
}

// sendIfChanged sends a shared fragment unless it is the same as last time.
func (h *Hub) sendIfChanged(event string, c templ.Component, match func(*client) bool) {
	msg := h.ui.event(event, c)
	h.mu.Lock()
	same := bytes.Equal(h.lastSent[event], msg)
	h.lastSent[event] = msg
	h.mu.Unlock()
	if !same {
		h.send(msg, match)
	}
}

// pushPages sends each overview page either its whole table, when the set or
// order of its rows changed, or the rows that changed.
func (h *Hub) pushPages(ctx context.Context, entries []fleet.PoolEntry, vs map[string]View, changed map[string]bool) {
	rowsWanted := map[string][]string{} // worker id -> page keys that show it
	for key, v := range vs {
		if v.Kind != "overview" {
			continue
		}
		ids, total := h.ui.svc.SelectPage(entries, v.Filter)
		h.mu.Lock()
		st := h.pages[key]
		if st == nil {
			st = &pageState{}
			h.pages[key] = st
		}
		same := slices.Equal(st.ids, ids)
		st.ids = ids
		h.mu.Unlock()
		if !same {
			workers, err := h.ui.svc.WorkersByID(ctx, ids)
			if err != nil {
				continue
			}
			list := h.ui.workerList(v.Filter, workers, total)
			h.send(h.ui.event(views.EventWorkers, views.WorkerTable(list)), byKey(key))
			continue
		}
		for _, id := range ids {
			if changed[id] {
				rowsWanted[id] = append(rowsWanted[id], key)
			}
		}
	}
	if len(rowsWanted) == 0 {
		return
	}
	ids := make([]string, 0, len(rowsWanted))
	for id := range rowsWanted {
		ids = append(ids, id)
	}
	workers, err := h.ui.svc.WorkersByID(ctx, ids)
	if err != nil {
		return
	}
	now := h.ui.svc.Now()
	for _, w := range workers {
		msg := h.ui.event(views.RowEvent(w.ID), views.WorkerRow(w, now))
		keys := rowsWanted[w.ID]
		h.send(msg, func(c *client) bool { return slices.Contains(keys, c.view.key()) })
	}
}

// pushWorkers re-renders each watched worker page whose worker changed.
func (h *Hub) pushWorkers(ctx context.Context, vs map[string]View, changed map[string]bool) {
	for key, v := range vs {
		if v.Kind != "worker" || !changed[v.WorkerID] {
			continue
		}
		h.send(h.ui.event(views.EventWorker, views.WorkerPanel(h.ui.workerDetail(ctx, v.WorkerID))), byKey(key))
	}
}

func (h *Hub) pushActivity(ctx context.Context, vs map[string]View) {
	for key, v := range vs {
		switch v.Kind {
		case "overview":
			// Rendered per key, but every overview shows the same list, so
			// sendIfChanged renders it once.
			h.sendIfChanged(views.EventActivity, views.Activity(h.ui.activity(ctx, "")), kind("overview"))
		case "worker":
			h.send(h.ui.event(views.EventActivity, views.Activity(h.ui.activity(ctx, v.WorkerID))), byKey(key))
		}
	}
}

func (h *Hub) pushAlerts(ctx context.Context, vs map[string]View) {
	if !anyKind(vs, "alerts") || h.ui.alerts == nil {
		return
	}
	h.send(h.ui.event(views.EventAlerts, h.ui.alertsFragment(ctx)), kind("alerts"))
}

func all(*client) bool { return true }

func kind(k string) func(*client) bool {
	return func(c *client) bool { return c.view.Kind == k }
}

func byKey(key string) func(*client) bool {
	return func(c *client) bool { return c.view.key() == key }
}

func anyKind(vs map[string]View, k string) bool {
	for _, v := range vs {
		if v.Kind == k {
			return true
		}
	}
	return false
}
