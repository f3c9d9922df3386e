package fleet

import (
	"math"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// State is a worker's lifecycle state. The operator sets the desired state
// with a command; the worker reports its actual state as the heartbeat status.
type State string

const (
	StateRunning  State = "running"
	StatePaused   State = "paused"
	StateDraining State = "draining"
	StateStopped  State = "stopped"
)

// States lists every state in lifecycle order.
var States = []State{StateRunning, StatePaused, StateDraining, StateStopped}

// DefaultDesiredState is the desired state of a worker that no command has
// touched, or whose desired state was lost with the state store.
const DefaultDesiredState = StateRunning

// ParseState returns the State named s, or an EINVALID error naming field.
func ParseState(s, field string) (State, error) {
	switch st := State(s); st {
	case StateRunning, StatePaused, StateDraining, StateStopped:
		return st, nil
	}
	return "", Errorf(EINVALID, field, "%s must be one of running, paused, draining, stopped; got %q", field, truncate(s, 40))
}

// Limits on what a worker may send. They keep one heartbeat small and bound
// what the dashboard has to show.
const (
	MaxNameLength    = 128
	MaxHostLength    = 255
	MaxVersionLength = 64
	MaxMetrics       = 64
	MaxMetricKey     = 64
	// MaxClockSkew is how far a worker's sent_at may be from the server's
	// clock before the worker is flagged; liveness never depends on it.
	MaxClockSkew = time.Minute
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
var metricKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]{0,63}$`)

// ValidateName checks a worker id or pool name against [A-Za-z0-9._-]{1,128}.
func ValidateName(field, s string) error {
	if s == "" {
		return Errorf(EINVALID, field, "%s is required and must match [A-Za-z0-9._-]{1,128}", field)
	}
	if !nameRE.MatchString(s) {
		return Errorf(EINVALID, field, "%s must match [A-Za-z0-9._-]{1,128}; got %q", field, truncate(s, 40))
	}
	// Browsers and proxies rewrite "." and ".." out of URL paths, so such a
	// worker or pool could never be addressed.
	if s == "." || s == ".." {
		return Errorf(EINVALID, field, "%s must match [A-Za-z0-9._-]{1,128} and not be . or ..", field)
	}
	return nil
}

// Heartbeat is one report from a worker, already decoded. Times the worker
// sent are kept for display and skew detection only: liveness comes from
// ReceivedAt, the server's clock.
type Heartbeat struct {
	ID        string
	Pool      string
	Status    State
	Host      string
	PID       int64
	Version   string
	StartedAt time.Time // zero when not sent
	SentAt    time.Time // zero when not sent
	Metrics   map[string]float64
	// ReceivedAt is set by the service from its clock, never by the worker.
	ReceivedAt time.Time
}

// Cumulative counters that workers report in metrics.
const (
	MetricProcessed = "jobs_processed"
	MetricFailed    = "jobs_failed"
	MetricMemoryMB  = "memory_mb"
	MetricBusy      = "busy"
)

// Validate checks every field of a decoded heartbeat and returns the first
// problem as an EINVALID error naming the field.
func (h *Heartbeat) Validate() error {
	if err := ValidateName("id", h.ID); err != nil {
		return err
	}
	if err := ValidateName("pool", h.Pool); err != nil {
		return err
	}
	if _, err := ParseState(string(h.Status), "status"); err != nil {
		return err
	}
	if err := validateText("host", h.Host, MaxHostLength); err != nil {
		return err
	}
	if err := validateText("version", h.Version, MaxVersionLength); err != nil {
		return err
	}
	if h.PID < 0 || h.PID > math.MaxInt32 {
		return Errorf(EINVALID, "pid", "pid must be an integer from 0 to %d", math.MaxInt32)
	}
	if len(h.Metrics) > MaxMetrics {
		return Errorf(EINVALID, "metrics", "metrics may have at most %d keys; got %d", MaxMetrics, len(h.Metrics))
	}
	for _, k := range sortedKeys(h.Metrics) {
		v := h.Metrics[k]
		field := "metrics." + truncate(k, MaxMetricKey)
		if !metricKeyRE.MatchString(k) {
			return Errorf(EINVALID, field, "metric names must match [A-Za-z_][A-Za-z0-9_.]{0,63}; got %q", truncate(k, 40))
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e15 {
			return Errorf(EINVALID, field, "%s must be a finite number no larger than 1e15 in magnitude", field)
		}
		if (k == MetricProcessed || k == MetricFailed) && (v < 0 || v != math.Trunc(v)) {
			return Errorf(EINVALID, field, "%s is a cumulative counter and must be a whole number >= 0", field)
		}
	}
	return nil
}

// validateText accepts printable UTF-8 up to max bytes.
func validateText(field, s string, max int) error {
	if len(s) > max {
		return Errorf(EINVALID, field, "%s must be at most %d bytes; got %d", field, max, len(s))
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return Errorf(EINVALID, field, "%s must be printable UTF-8 text without control characters", field)
	}
	return nil
}

// Worker is the control plane's view of one worker: what it last reported,
// what the operator wants of it, and what follows from the server's clock.
type Worker struct {
	ID            string
	Pool          string
	Status        State // as last reported
	Desired       State
	Host          string
	PID           int64
	Version       string
	StartedAt     time.Time
	LastHeartbeat time.Time // server receive time
	Metrics       map[string]float64
	// ClockSkew is the worker's sent_at minus the server's receive time, or
	// zero when the worker sent no sent_at.
	ClockSkew time.Duration
	// LastCommand is the latest operator or automatic command, if any.
	LastCommand *Command

	// Stale is derived from LastHeartbeat and the grace period by Derive.
	Stale bool
	// HeartbeatAge is the time since LastHeartbeat, set by Derive.
	HeartbeatAge time.Duration
}

// Derive fills the fields that follow from the server's clock.
func (w *Worker) Derive(now time.Time, grace time.Duration) {
	w.HeartbeatAge = now.Sub(w.LastHeartbeat)
	if w.HeartbeatAge < 0 {
		w.HeartbeatAge = 0
	}
	w.Stale = IsStale(w.LastHeartbeat, now, grace)
	if w.Desired == "" {
		w.Desired = DefaultDesiredState
	}
}

// IsStale reports whether a heartbeat received at last is older than grace.
// A worker is stale whatever its last reported status.
func IsStale(last, now time.Time, grace time.Duration) bool {
	return last.IsZero() || now.Sub(last) > grace
}

// Pending reports whether the desired state differs from what the worker has
// reported: the command was requested but not yet applied.
func (w *Worker) Pending() bool {
	return !Applied(w.Desired, w.Status)
}

// Applied reports whether a worker reporting status has complied with
// desired. A drain is applied once the worker reports draining or stopped.
func Applied(desired, status State) bool {
	if desired == "" {
		desired = DefaultDesiredState
	}
	if desired == StateDraining {
		return status == StateDraining || status == StateStopped
	}
	return desired == status
}

// SkewWarning reports whether the worker's clock is off by more than MaxClockSkew.
func (w *Worker) SkewWarning() bool {
	return w.ClockSkew > MaxClockSkew || w.ClockSkew < -MaxClockSkew
}

// Processed returns the cumulative jobs_processed counter, or 0.
func (w *Worker) Processed() float64 { return w.Metrics[MetricProcessed] }

// Failed returns the cumulative jobs_failed counter, or 0.
func (w *Worker) Failed() float64 { return w.Metrics[MetricFailed] }

// ErrorRate returns failed over processed in percent, and false when the
// worker has processed nothing.
func (w *Worker) ErrorRate() (float64, bool) {
	return ErrorRate(w.Processed(), w.Failed())
}

// ErrorRate returns failed over processed in percent, and false when
// processed is zero. Failed jobs count as processed jobs.
func ErrorRate(processed, failed float64) (float64, bool) {
	if processed <= 0 {
		return 0, false
	}
	return 100 * failed / processed, true
}

// DisplayStatus is the status shown to operators: "offline" for a stale
// worker, else the reported status.
func (w *Worker) DisplayStatus() string {
	if w.Stale {
		return "offline"
	}
	return string(w.Status)
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
