package fleet

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestAppliedAndPending(t *testing.T) {
	tests := []struct {
		desired, status State
		applied         bool
	}{
		{"", StateRunning, true},
		{"", StatePaused, false},
		{StateRunning, StateRunning, true},
		{StateRunning, StatePaused, false},
		{StateRunning, StateDraining, false},
		{StateRunning, StateStopped, false},
		{StatePaused, StatePaused, true},
		{StatePaused, StateRunning, false},
		{StatePaused, StateStopped, false},
		{StateDraining, StateRunning, false},
		{StateDraining, StatePaused, false},
		{StateDraining, StateDraining, true},
		// A drain ends with the worker exiting, so stopped also applies it.
		{StateDraining, StateStopped, true},
		{StateStopped, StateStopped, true},
		{StateStopped, StateDraining, false},
		{StateStopped, StateRunning, false},
		{StateRunning, "", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("desired=%s/status=%s", tt.desired, tt.status), func(t *testing.T) {
			if got := Applied(tt.desired, tt.status); got != tt.applied {
				t.Errorf("Applied = %v, want %v", got, tt.applied)
			}
			w := &Worker{Desired: tt.desired, Status: tt.status}
			if got := w.Pending(); got != !tt.applied {
				t.Errorf("Pending = %v, want %v", got, !tt.applied)
			}
		})
	}
}

func TestIsStaleBoundaries(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	grace := 30 * time.Second
	tests := []struct {
		name  string
		last  time.Time
		stale bool
	}{
		{"never heard from", time.Time{}, true},
		{"just now", now, false},
		{"one nanosecond inside grace", now.Add(-grace + time.Nanosecond), false},
		{"exactly at grace", now.Add(-grace), false},
		{"one nanosecond past grace", now.Add(-grace - time.Nanosecond), true},
		{"one millisecond past grace", now.Add(-grace - time.Millisecond), true},
		{"two days old", now.Add(-48 * time.Hour), true},
		// A receive time ahead of now (another replica's clock) is live.
		{"in the future", now.Add(time.Minute), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsStale(tt.last, now, grace); got != tt.stale {
				t.Errorf("IsStale = %v, want %v", got, tt.stale)
			}
		})
	}
}

func TestDeriveUsesServerClock(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	grace := 30 * time.Second

	w := &Worker{Status: StateRunning, LastHeartbeat: now.Add(-31 * time.Second), ClockSkew: -10 * time.Minute}
	w.Derive(now, grace)
	if !w.Stale {
		t.Error("Stale = false for a heartbeat 31 s old with 30 s grace")
	}
	if w.HeartbeatAge != 31*time.Second {
		t.Errorf("HeartbeatAge = %v, want 31s", w.HeartbeatAge)
	}
	if w.Desired != DefaultDesiredState {
		t.Errorf("Desired = %q, want the default %q", w.Desired, DefaultDesiredState)
	}
	if got := w.DisplayStatus(); got != "offline" {
		t.Errorf("DisplayStatus = %q, want offline", got)
	}

	live := &Worker{Status: StatePaused, Desired: StatePaused, LastHeartbeat: now.Add(time.Second), ClockSkew: time.Hour}
	live.Derive(now, grace)
	if live.Stale {
		t.Error("Stale = true for a worker whose clock is an hour fast; the skew must not change liveness")
	}
	if live.HeartbeatAge != 0 {
		t.Errorf("HeartbeatAge = %v for a receive time after now, want 0", live.HeartbeatAge)
	}
	if got := live.DisplayStatus(); got != "paused" {
		t.Errorf("DisplayStatus = %q, want paused", got)
	}
}

func TestSkewWarning(t *testing.T) {
	tests := []struct {
		skew time.Duration
		warn bool
	}{
		{0, false},
		{MaxClockSkew, false},
		{-MaxClockSkew, false},
		{MaxClockSkew + time.Millisecond, true},
		{-MaxClockSkew - time.Millisecond, true},
		{-10 * time.Minute, true},
		{time.Hour, true},
	}
	for _, tt := range tests {
		w := &Worker{ClockSkew: tt.skew}
		if got := w.SkewWarning(); got != tt.warn {
			t.Errorf("SkewWarning with skew %v = %v, want %v", tt.skew, got, tt.warn)
		}
	}
}

func validHeartbeat() Heartbeat {
	return Heartbeat{
		ID: "w-01", Pool: "billing", Status: StateRunning,
		Host: "host-1", PID: 42, Version: "1.0.0",
		Metrics: map[string]float64{"jobs_processed": 1200, "jobs_failed": 12, "memory_mb": 256},
	}
}

func TestHeartbeatValidateAcceptsValid(t *testing.T) {
	tests := map[string]func(h *Heartbeat){
		"plain":                   func(h *Heartbeat) {},
		"no optional fields":      func(h *Heartbeat) { h.Host, h.PID, h.Version, h.Metrics = "", 0, "", nil },
		"name of 128 characters":  func(h *Heartbeat) { h.ID = strings.Repeat("a", 128) },
		"dots dashes underscores": func(h *Heartbeat) { h.Pool = "eu-west_1.billing" },
		"unicode host":            func(h *Heartbeat) { h.Host = "wörker-ä.example" },
		"host with a space":       func(h *Heartbeat) { h.Host = "build box 7" },
		"host of 255 bytes":       func(h *Heartbeat) { h.Host = strings.Repeat("h", MaxHostLength) },
		"version of 64 bytes":     func(h *Heartbeat) { h.Version = strings.Repeat("v", MaxVersionLength) },
		"pid at the maximum":      func(h *Heartbeat) { h.PID = math.MaxInt32 },
		"64 metrics": func(h *Heartbeat) {
			h.Metrics = map[string]float64{}
			for i := range MaxMetrics {
				h.Metrics[fmt.Sprintf("m_%d", i)] = float64(i)
			}
		},
		"negative gauge":    func(h *Heartbeat) { h.Metrics = map[string]float64{"queue_delta": -5} },
		"fractional gauge":  func(h *Heartbeat) { h.Metrics = map[string]float64{"busy": 0.5} },
		"gauge at 1e15":     func(h *Heartbeat) { h.Metrics = map[string]float64{"bytes": 1e15} },
		"metric key of 64":  func(h *Heartbeat) { h.Metrics = map[string]float64{"m" + strings.Repeat("x", 63): 1} },
		"dotted metric key": func(h *Heartbeat) { h.Metrics = map[string]float64{"queue.depth": 3} },
		"draining status":   func(h *Heartbeat) { h.Status = StateDraining },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			h := validHeartbeat()
			mutate(&h)
			if err := h.Validate(); err != nil {
				t.Errorf("Validate = %v, want nil", err)
			}
		})
	}
}

func TestHeartbeatValidateRejectsEachField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(h *Heartbeat)
		field  string
		// form is a part of the message that states the accepted form.
		form string
	}{
		{"empty id", func(h *Heartbeat) { h.ID = "" }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"id of 129", func(h *Heartbeat) { h.ID = strings.Repeat("a", 129) }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"id with a space", func(h *Heartbeat) { h.ID = "w 01" }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"id with a slash", func(h *Heartbeat) { h.ID = "w/01" }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"id with unicode", func(h *Heartbeat) { h.ID = "wörker" }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"id with markup", func(h *Heartbeat) { h.ID = "<script>" }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"id with a colon", func(h *Heartbeat) { h.ID = "w:01" }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"id with a newline", func(h *Heartbeat) { h.ID = "w-01\n" }, "id", "[A-Za-z0-9._-]{1,128}"},
		{"empty pool", func(h *Heartbeat) { h.Pool = "" }, "pool", "[A-Za-z0-9._-]{1,128}"},
		{"pool with braces", func(h *Heartbeat) { h.Pool = "{billing}" }, "pool", "[A-Za-z0-9._-]{1,128}"},
		{"pool of 129", func(h *Heartbeat) { h.Pool = strings.Repeat("p", 129) }, "pool", "[A-Za-z0-9._-]{1,128}"},
		{"empty status", func(h *Heartbeat) { h.Status = "" }, "status", "running, paused, draining, stopped"},
		{"unknown status", func(h *Heartbeat) { h.Status = "offline" }, "status", "running, paused, draining, stopped"},
		{"status in capitals", func(h *Heartbeat) { h.Status = "RUNNING" }, "status", "running, paused, draining, stopped"},
		{"host of 256 bytes", func(h *Heartbeat) { h.Host = strings.Repeat("h", MaxHostLength+1) }, "host", "at most 255 bytes"},
		{"host with a control character", func(h *Heartbeat) { h.Host = "host\x1b[31m" }, "host", "without control characters"},
		{"host with invalid UTF-8", func(h *Heartbeat) { h.Host = "host\xff" }, "host", "printable UTF-8"},
		{"version of 65 bytes", func(h *Heartbeat) { h.Version = strings.Repeat("v", MaxVersionLength+1) }, "version", "at most 64 bytes"},
		{"version with a newline", func(h *Heartbeat) { h.Version = "1.0\n" }, "version", "without control characters"},
		{"negative pid", func(h *Heartbeat) { h.PID = -1 }, "pid", "from 0 to 2147483647"},
		{"pid past int32", func(h *Heartbeat) { h.PID = math.MaxInt32 + 1 }, "pid", "from 0 to 2147483647"},
		{"65 metrics", func(h *Heartbeat) {
			h.Metrics = map[string]float64{}
			for i := range MaxMetrics + 1 {
				h.Metrics[fmt.Sprintf("m_%d", i)] = 1
			}
		}, "metrics", "at most 64 keys"},
		{"metric key with a space", func(h *Heartbeat) { h.Metrics = map[string]float64{"queue depth": 1} }, "metrics.queue depth", "[A-Za-z_][A-Za-z0-9_.]{0,63}"},
		{"metric key starting with a digit", func(h *Heartbeat) { h.Metrics = map[string]float64{"1st": 1} }, "metrics.1st", "[A-Za-z_][A-Za-z0-9_.]{0,63}"},
		{"empty metric key", func(h *Heartbeat) { h.Metrics = map[string]float64{"": 1} }, "metrics.", "[A-Za-z_][A-Za-z0-9_.]{0,63}"},
		{"NaN metric", func(h *Heartbeat) { h.Metrics = map[string]float64{"busy": math.NaN()} }, "metrics.busy", "finite number"},
		{"infinite metric", func(h *Heartbeat) { h.Metrics = map[string]float64{"busy": math.Inf(1)} }, "metrics.busy", "finite number"},
		{"metric past 1e15", func(h *Heartbeat) { h.Metrics = map[string]float64{"bytes": 1.5e15} }, "metrics.bytes", "1e15"},
		{"negative counter", func(h *Heartbeat) { h.Metrics = map[string]float64{"jobs_processed": -1} }, "metrics.jobs_processed", "whole number >= 0"},
		{"fractional counter", func(h *Heartbeat) { h.Metrics = map[string]float64{"jobs_failed": 1.5} }, "metrics.jobs_failed", "whole number >= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := validHeartbeat()
			tt.mutate(&h)
			err := h.Validate()
			if err == nil {
				t.Fatal("Validate = nil, want an error")
			}
			if code := ErrorCode(err); code != EINVALID {
				t.Errorf("code = %q, want %q", code, EINVALID)
			}
			if field := ErrorField(err); field != tt.field {
				t.Errorf("field = %q, want %q", field, tt.field)
			}
			if msg := ErrorMessage(err); !strings.Contains(msg, tt.form) {
				t.Errorf("message = %q, want it to state the accepted form %q", msg, tt.form)
			}
		})
	}
}

func TestHeartbeatValidateLongMetricKey(t *testing.T) {
	h := validHeartbeat()
	key := "m" + strings.Repeat("x", MaxMetricKey)
	h.Metrics = map[string]float64{key: 1}

	err := h.Validate()
	if err == nil {
		t.Fatal("Validate accepted a metric key of 65 bytes")
	}
	// The field names the key cut to its first 64 bytes, so a long key
	// cannot make the error message long.
	if field := ErrorField(err); !strings.HasPrefix(field, "metrics."+key[:MaxMetricKey]) || len(field) > len("metrics.")+MaxMetricKey+len("…") {
		t.Errorf("field = %q, want metrics. and the key's first 64 bytes", field)
	}
	if msg := ErrorMessage(err); !strings.Contains(msg, "[A-Za-z_][A-Za-z0-9_.]{0,63}") {
		t.Errorf("message = %q, want the accepted form", msg)
	}
}

func TestValidateNameTruncatesLongValues(t *testing.T) {
	err := ValidateName("id", strings.Repeat("<", 10_000))
	if err == nil {
		t.Fatal("ValidateName accepted 10,000 angle brackets")
	}
	if n := len(ErrorMessage(err)); n > 200 {
		t.Errorf("message is %d bytes, want the bad value truncated", n)
	}
}

func TestParseState(t *testing.T) {
	for _, s := range States {
		got, err := ParseState(string(s), "status")
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %q, %v", s, got, err)
		}
	}
	_, err := ParseState("offline", "desired_state")
	if field := ErrorField(err); field != "desired_state" {
		t.Errorf("field = %q, want the field passed in", field)
	}
}

func TestErrorRate(t *testing.T) {
	tests := []struct {
		processed, failed float64
		rate              float64
		ok                bool
	}{
		{0, 0, 0, false},
		{0, 5, 0, false},
		{-1, 0, 0, false},
		{100, 0, 0, true},
		{1200, 12, 1, true},
		{100, 12, 12, true},
		{100, 100, 100, true},
		{3, 1, 100.0 / 3, true},
	}
	for _, tt := range tests {
		rate, ok := ErrorRate(tt.processed, tt.failed)
		if ok != tt.ok {
			t.Errorf("ErrorRate(%v, %v) ok = %v, want %v", tt.processed, tt.failed, ok, tt.ok)
		}
		if math.Abs(rate-tt.rate) > 1e-9 {
			t.Errorf("ErrorRate(%v, %v) = %v, want %v", tt.processed, tt.failed, rate, tt.rate)
		}
	}

	w := &Worker{Metrics: map[string]float64{MetricProcessed: 200, MetricFailed: 50}}
	rate, ok := w.ErrorRate()
	if !ok || rate != 25 {
		t.Errorf("Worker.ErrorRate = %v, %v; want 25, true", rate, ok)
	}
	empty := &Worker{}
	if _, ok := empty.ErrorRate(); ok {
		t.Error("Worker.ErrorRate ok = true for a worker without metrics")
	}
}
