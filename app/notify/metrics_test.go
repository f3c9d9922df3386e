package notify_test

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/verifier/controlplane/app/notify"
)

func TestMetricsNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics := notify.NewMetrics(reg)
	metrics.InitChannel("slack")

	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]int{}
	for _, f := range families {
		got[f.GetName()] = len(f.GetMetric())
	}

	want := map[string]int{
		"controlplane_notifications_total":           1,
		"controlplane_notification_failures_total":   len(notify.Reasons),
		"controlplane_notification_duration_seconds": 1,
	}
	for name, series := range want {
		if got[name] != series {
			t.Errorf("%s has %d series, want %d", name, got[name], series)
		}
	}
}

func TestMetricsObserve(t *testing.T) {
	metrics := notify.NewMetrics(prometheus.NewRegistry())

	metrics.Observe("email", 200*time.Millisecond, nil)
	metrics.Observe("email", time.Second, notify.WithReason(notify.ReasonSMTP, errors.New("550 rejected")))

	if got := testutil.ToFloat64(metrics.Attempts.WithLabelValues("email")); got != 2 {
		t.Errorf("attempts = %v, want 2", got)
	}
	if got := testutil.ToFloat64(metrics.Failures.WithLabelValues("email", "smtp")); got != 1 {
		t.Errorf("smtp failures = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(metrics.Duration); got != 1 {
		t.Errorf("duration series = %d, want 1", got)
	}
}

func TestMetricsNil(t *testing.T) {
	var metrics *notify.Metrics
	metrics.InitChannel("slack")
	metrics.Observe("slack", time.Second, errors.New("x"))
}
