package alert

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// Sender delivers one notification to one channel, retrying as it sees fit
// (notify.Retrier); it logs its own failures.
type Sender interface {
	Name() string
	Send(ctx context.Context, n fleet.Notification) error
}

// queueSize bounds the notifications waiting for one channel, such as while
// Slack asks us to slow down.
const queueSize = 64

// sendTimeout bounds one notification's delivery, retries included.
const sendTimeout = 10 * time.Minute

// Dispatcher gives each channel its own queue and goroutine, so a slow or
// rate-limited channel never delays another or the alert check.
type Dispatcher struct {
	queues []chan fleet.Notification
	names  []string
	log    *slog.Logger
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// NewDispatcher starts one goroutine per sender.
func NewDispatcher(senders []Sender, log *slog.Logger) *Dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{log: log, ctx: ctx, cancel: cancel}
	for _, s := range senders {
		q := make(chan fleet.Notification, queueSize)
		d.queues = append(d.queues, q)
		d.names = append(d.names, s.Name())
		d.wg.Add(1)
		go d.deliver(s, q)
	}
	return d
}

func (d *Dispatcher) deliver(s Sender, q chan fleet.Notification) {
	defer d.wg.Done()
	for n := range q {
		ctx, cancel := context.WithTimeout(d.ctx, sendTimeout)
		_ = s.Send(ctx, n)
		cancel()
	}
}

// Enqueue hands n to every channel without waiting. A channel whose queue
// is full loses n, and says so in the log.
func (d *Dispatcher) Enqueue(n fleet.Notification) {
	if d == nil {
		return
	}
	for i, q := range d.queues {
		select {
		case q <- n:
		default:
			d.log.Error("notification dropped: the channel's queue is full", "channel", d.names[i], "title", n.Title())
		}
	}
}

// Close stops accepting notifications and waits until the queued ones are
// sent or ctx ends, when deliveries in progress are cancelled.
func (d *Dispatcher) Close(ctx context.Context) {
	if d == nil {
		return
	}
	for _, q := range d.queues {
		close(q)
	}
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.cancel()
		<-done
	}
}
