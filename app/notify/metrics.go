package notify

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics counts notification attempts per channel. As in Alertmanager, every
// call to Notifier.Notify is one attempt, so a notification that needed three
// tries adds three to the total and two to the failures.
type Metrics struct {
	Attempts *prometheus.CounterVec   // channel
	Failures *prometheus.CounterVec   // channel, reason
	Duration *prometheus.HistogramVec // channel
}

// NewMetrics registers the notification metrics with reg. It panics, as
// promauto does, when reg already holds metrics of the same names.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Attempts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_notifications_total",
			Help: "Notification attempts by channel; each retry counts again.",
		}, []string{"channel"}),
		Failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_notification_failures_total",
			Help: "Failed notification attempts by channel and reason: timeout, network, http_4xx, http_5xx, rate_limited, smtp, template or config.",
		}, []string{"channel", "reason"}),
		Duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "controlplane_notification_duration_seconds",
			Help: "Duration of one notification attempt by channel, failed attempts included.",
			// The last buckets cover the 10 s request timeouts of the
			// channels, so timed-out attempts land in their own bucket.
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}, []string{"channel"}),
	}
}

// InitChannel creates the series of channel at zero, so that dashboards and
// rate() see the channel before its first failure.
func (m *Metrics) InitChannel(channel string) {
	if m == nil {
		return
	}
	m.Attempts.WithLabelValues(channel)
	for _, reason := range Reasons {
		m.Failures.WithLabelValues(channel, string(reason))
	}
	m.Duration.WithLabelValues(channel)
}

// Observe records one attempt on channel that took d and failed with err,
// or succeeded when err is nil. A nil Metrics records nothing.
func (m *Metrics) Observe(channel string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.Attempts.WithLabelValues(channel).Inc()
	m.Duration.WithLabelValues(channel).Observe(d.Seconds())
	if err != nil {
		m.Failures.WithLabelValues(channel, string(ReasonOf(err))).Inc()
	}
}
