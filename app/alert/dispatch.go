package alert

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Sender delivers one notification to one channel and retries by its own
// policy (notify.Retrier). It logs its own failures.
type Sender interface {
	Name() string
	Send(ctx context.Context, n fleet.Notification) error
}

// sendTimeout bounds one notification's delivery, retries included.
const sendTimeout = 10 * time.Minute

// Dispatcher gives each channel its own goroutine, so a slow or rate-limited
// channel never delays another or the alert check. While a channel is busy
// (Slack asked us to wait, say), the notifications that arrive are merged
// into one, sent when it is free: nothing is dropped, and a backlog goes out
// as one grouped message instead of a burst.
type Dispatcher struct {
	channels []*channel
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
	close    sync.Once
}

// channel is one sender with the notification waiting for it.
type channel struct {
	sender  Sender
	mu      sync.Mutex
	pending fleet.Notification
	closed  bool          // set, under mu, when wake is closed
	busy    bool          // a send is in progress
	wake    chan struct{} // buffered 1: pending has content
}

// NewDispatcher starts one goroutine per sender.
func NewDispatcher(senders []Sender, log *slog.Logger) *Dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{ctx: ctx, cancel: cancel}
	for _, s := range senders {
		ch := &channel{sender: s, wake: make(chan struct{}, 1)}
		d.channels = append(d.channels, ch)
		d.wg.Add(1)
		go d.deliver(ch)
	}
	return d
}

func (d *Dispatcher) deliver(ch *channel) {
	defer d.wg.Done()
	// The loop ends once Close has closed wake and its last signal is taken.
	for range ch.wake {
		ch.mu.Lock()
		n := ch.pending
		ch.pending = fleet.Notification{}
		ch.busy = !n.Empty()
		ch.mu.Unlock()
		if !n.Empty() {
			ctx, cancel := context.WithTimeout(d.ctx, sendTimeout)
			_ = ch.sender.Send(ctx, n)
			cancel()
		}
		ch.mu.Lock()
		ch.busy = false
		ch.mu.Unlock()
	}
}

// Enqueue hands n to every channel without waiting.
func (d *Dispatcher) Enqueue(n fleet.Notification) {
	if d == nil || n.Empty() {
		return
	}
	for _, ch := range d.channels {
		ch.mu.Lock()
		if !ch.closed {
			ch.pending = merge(ch.pending, n)
			select {
			case ch.wake <- struct{}{}:
			default: // already woken: it takes the merged notification
			}
		}
		ch.mu.Unlock()
	}
}

// merge adds n to a waiting notification. An alert listed twice keeps its
// latest version; one that fired and resolved while waiting is listed in
// both, in that order, as it happened.
func merge(waiting, n fleet.Notification) fleet.Notification {
	if waiting.Empty() {
		return n
	}
	waiting.Firing = mergeAlerts(waiting.Firing, n.Firing)
	waiting.Resolved = mergeAlerts(waiting.Resolved, n.Resolved)
	if n.URL != "" {
		waiting.URL = n.URL
	}
	return waiting
}

func mergeAlerts(a, b []fleet.Alert) []fleet.Alert {
	out := make([]fleet.Alert, 0, len(a)+len(b))
	at := make(map[string]int, len(a)+len(b))
	for _, list := range [][]fleet.Alert{a, b} {
		for _, x := range list {
			if i, ok := at[x.Fingerprint]; ok {
				out[i] = x
				continue
			}
			at[x.Fingerprint] = len(out)
			out = append(out, x)
		}
	}
	fleet.SortAlerts(out)
	return out
}

// Wait blocks until every channel has sent what was enqueued before the
// call, or ctx ends. Tests use it to see what was sent.
func (d *Dispatcher) Wait(ctx context.Context) error {
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for {
		idle := true
		for _, ch := range d.channels {
			ch.mu.Lock()
			idle = idle && !ch.busy && ch.pending.Empty() && len(ch.wake) == 0
			ch.mu.Unlock()
		}
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// Close stops accepting notifications and waits until the waiting ones are
// sent or ctx ends, when deliveries in progress are cancelled. Calling it
// again does nothing.
func (d *Dispatcher) Close(ctx context.Context) {
	if d == nil {
		return
	}
	d.close.Do(func() {
		for _, ch := range d.channels {
			ch.mu.Lock()
			ch.closed = true
			close(ch.wake)
			ch.mu.Unlock()
		}
		done := make(chan struct{})
		go func() { d.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			d.cancel()
			<-done
		}
	})
}
