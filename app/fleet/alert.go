package fleet

import (
	"fmt"
	"sort"
	"time"
)

// Rule names an alert rule.
type Rule string

const (
	RuleHeartbeatMissing  Rule = "heartbeat_missing"
	RuleErrorRate         Rule = "error_rate"
	RulePoolUnderSize     Rule = "pool_under_size"
	RuleCommandNotApplied Rule = "command_not_applied"
	// RuleStoreUnavailable fires when the control plane itself cannot reach
	// Redis; while it fires no worker is blamed for missing heartbeats.
	RuleStoreUnavailable Rule = "store_unavailable"
)

// AlertStatus is firing or resolved.
type AlertStatus string

const (
	AlertFiring   AlertStatus = "firing"
	AlertResolved AlertStatus = "resolved"
)

// Alert is one incident of one rule on one subject (a worker, a pool or the
// control plane itself).
type Alert struct {
	// Fingerprint identifies the incident's rule and subject, e.g.
	// "heartbeat_missing/worker/w-01"; it is stable across check runs.
	Fingerprint string
	Rule        Rule
	Status      AlertStatus
	Pool        string // empty for fleet-wide alerts
	WorkerID    string // empty for pool and fleet alerts
	// Summary is one line for a list, e.g. "w-01 missed heartbeats".
	Summary string
	// Value and Threshold are the measured value and the limit, in Unit.
	Value     float64
	Threshold float64
	Unit      string
	StartsAt  time.Time
	EndsAt    time.Time // set once resolved
	// Silenced alerts are shown but not notified.
	Silenced bool
}

// Fingerprint returns the fingerprint of rule on a subject.
func Fingerprint(rule Rule, pool, workerID string) string {
	switch {
	case workerID != "":
		return string(rule) + "/worker/" + workerID
	case pool != "":
		return string(rule) + "/pool/" + pool
	default:
		return string(rule) + "/fleet"
	}
}

// Subject returns where the alert is, e.g. "worker w-01 in pool billing".
func (a Alert) Subject() string {
	switch {
	case a.WorkerID != "":
		return fmt.Sprintf("worker %s in pool %s", a.WorkerID, a.Pool)
	case a.Pool != "":
		return "pool " + a.Pool
	default:
		return "control plane"
	}
}

// Notification is what one check run sends to one channel: the alerts that
// started or re-notify, and those that resolved.
type Notification struct {
	Firing   []Alert
	Resolved []Alert
	// URL links to the Alerts page; empty when PUBLIC_URL is unset.
	URL string
}

// Empty reports whether there is nothing to send.
func (n Notification) Empty() bool { return len(n.Firing) == 0 && len(n.Resolved) == 0 }

// Title returns a one-line subject such as
// "[FIRING] 3 workers missed heartbeats in pool billing" or
// "[FIRING] 2 alerts, [RESOLVED] 1".
func (n Notification) Title() string {
	switch {
	case len(n.Firing) > 0 && len(n.Resolved) > 0:
		return fmt.Sprintf("[FIRING] %s, [RESOLVED] %s", describe(n.Firing), describe(n.Resolved))
	case len(n.Firing) > 0:
		return "[FIRING] " + describe(n.Firing)
	case len(n.Resolved) > 0:
		return "[RESOLVED] " + describe(n.Resolved)
	}
	return ""
}

// describe summarises alerts: the alert's own summary when there is one, a
// count with the rule's wording when all share a rule, else a count.
func describe(alerts []Alert) string {
	if len(alerts) == 1 {
		return alerts[0].Summary
	}
	rule, pool := alerts[0].Rule, alerts[0].Pool
	for _, a := range alerts[1:] {
		if a.Rule != rule {
			return fmt.Sprintf("%d alerts", len(alerts))
		}
		if a.Pool != pool {
			pool = ""
		}
	}
	where := ""
	if pool != "" {
		where = " in pool " + pool
	}
	switch rule {
	case RuleHeartbeatMissing:
		return fmt.Sprintf("%d workers missed heartbeats%s", len(alerts), where)
	case RuleErrorRate:
		return fmt.Sprintf("%d workers above the error-rate threshold%s", len(alerts), where)
	case RulePoolUnderSize:
		return fmt.Sprintf("%d pools under their desired size", len(alerts))
	case RuleCommandNotApplied:
		return fmt.Sprintf("%d commands not applied%s", len(alerts), where)
	}
	return fmt.Sprintf("%d alerts", len(alerts))
}

// SortAlerts orders alerts by rule, pool, worker, for stable messages.
func SortAlerts(alerts []Alert) {
	sort.Slice(alerts, func(i, j int) bool {
		a, b := alerts[i], alerts[j]
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		return a.WorkerID < b.WorkerID
	})
}
