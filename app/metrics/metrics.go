// Package metrics defines the control plane's Prometheus metrics against an
// injected registry. Labels are route templates, pools (capped) and small
// fixed sets, never worker ids.
package metrics

import (
	"context"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/verifier/controlplane/app/fleet"
)

// Metrics holds the counters and histograms the app updates as it runs.
type Metrics struct {
	HeartbeatsAccepted prometheus.Counter
	HeartbeatsRejected *prometheus.CounterVec // reason
	Commands           *prometheus.CounterVec // action, source
	HTTPDuration       *prometheus.HistogramVec
	Errors             *prometheus.CounterVec // code
	StreamClients      prometheus.Gauge
	StreamDropped      prometheus.Counter
	DependencyFailures *prometheus.CounterVec // dependency
}

// New registers the metrics with reg.
func New(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		HeartbeatsAccepted: f.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_heartbeats_total",
			Help: "Heartbeats accepted and stored.",
		}),
		HeartbeatsRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_heartbeats_rejected_total",
			Help: "Heartbeats rejected, by reason: the invalid field, body, or unavailable when Redis could not be reached.",
		}, []string{"reason"}),
		Commands: f.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_commands_total",
			Help: "Commands that changed a worker's desired state, by action and source (ui, api, auto).",
		}, []string{"action", "source"}),
		HTTPDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "controlplane_http_request_duration_seconds",
			Help:    "HTTP request duration by method, route template and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route", "status"}),
		Errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_http_errors_total",
			Help: "Error responses by error code.",
		}, []string{"code"}),
		StreamClients: f.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_event_stream_clients",
			Help: "Open Server-Sent Events streams on this replica.",
		}),
		StreamDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_event_stream_dropped_total",
			Help: "Event stream clients dropped because they could not keep up.",
		}),
		DependencyFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_dependency_failures_total",
			Help: "Failed calls to a dependency (redis, mysql, slack, smtp) caught and retried or reported.",
		}, []string{"dependency"}),
	}
}

// rejectReasons bounds the reason label: a field outside it counts as other.
var rejectReasons = map[string]bool{
	"id": true, "pool": true, "status": true, "host": true, "pid": true, "version": true,
	"started_at": true, "sent_at": true, "metrics": true, "body": true, "unavailable": true,
}

// HeartbeatAccepted implements service.Observer.
func (m *Metrics) HeartbeatAccepted() { m.HeartbeatsAccepted.Inc() }

// HeartbeatRejected implements service.Observer.
func (m *Metrics) HeartbeatRejected(reason string) {
	if len(reason) > 8 && reason[:8] == "metrics." {
		reason = "metrics"
	}
	if !rejectReasons[reason] {
		reason = "other"
	}
	m.HeartbeatsRejected.WithLabelValues(reason).Inc()
}

// CommandIssued implements service.Observer.
func (m *Metrics) CommandIssued(action fleet.Action, source string) {
	m.Commands.WithLabelValues(string(action), source).Inc()
}

// OtherPool is the pool label under which pools past the cap are summed.
// The parentheses are outside the characters a pool name may contain, so no
// real pool can share the label and make a scrape fail on a duplicate.
const OtherPool = "(other)"

// FleetCollector reads live worker and pool counts at scrape time, so the
// numbers are the same on every replica.
type FleetCollector struct {
	pools    func(ctx context.Context) ([]*fleet.Pool, error)
	maxPools int
	timeout  time.Duration

	workers *prometheus.Desc
	desired *prometheus.Desc
	known   *prometheus.Desc
	up      *prometheus.Desc
}

// NewFleetCollector returns a collector that calls pools at each scrape and
// exports at most maxPools pool label values: the largest pools by worker
// count, with the rest summed under pool="(other)".
func NewFleetCollector(pools func(ctx context.Context) ([]*fleet.Pool, error), maxPools int, timeout time.Duration) *FleetCollector {
	return &FleetCollector{
		pools: pools, maxPools: maxPools, timeout: timeout,
		workers: prometheus.NewDesc("controlplane_workers", "Workers by pool and status; status offline counts stale workers.", []string{"pool", "status"}, nil),
		desired: prometheus.NewDesc("controlplane_pool_desired_count", "Desired worker count of each scaled pool.", []string{"pool"}, nil),
		known:   prometheus.NewDesc("controlplane_pools", "Known pools, including those past the label cap.", nil, nil),
		up:      prometheus.NewDesc("controlplane_state_store_up", "1 when Redis answered this scrape, else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.workers
	ch <- c.desired
	ch <- c.known
	ch <- c.up
}

// Collect implements prometheus.Collector.
func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	pools, err := c.pools(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.known, prometheus.GaugeValue, float64(len(pools)))

	sort.SliceStable(pools, func(i, j int) bool {
		a, b := pools[i].Live()+pools[i].Stale, pools[j].Live()+pools[j].Stale
		if a != b {
			return a > b
		}
		return pools[i].Name < pools[j].Name
	})
	other := &fleet.Pool{Name: OtherPool, ByStatus: map[fleet.State]int{}}
	for i, p := range pools {
		if i >= c.maxPools {
			for s, n := range p.ByStatus {
				other.ByStatus[s] += n
			}
			other.Stale += p.Stale
			if p.HasDesired {
				other.DesiredCount += p.DesiredCount
				other.HasDesired = true
			}
			continue
		}
		c.collectPool(ch, p)
	}
	if len(pools) > c.maxPools {
		c.collectPool(ch, other)
	}
}

func (c *FleetCollector) collectPool(ch chan<- prometheus.Metric, p *fleet.Pool) {
	for _, s := range fleet.States {
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(p.ByStatus[s]), p.Name, string(s))
	}
	ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(p.Stale), p.Name, "offline")
	if p.HasDesired {
		ch <- prometheus.MustNewConstMetric(c.desired, prometheus.GaugeValue, float64(p.DesiredCount), p.Name)
	}
}
