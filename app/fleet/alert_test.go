package fleet

import "testing"

func missed(id, pool string) Alert {
	return Alert{Rule: RuleHeartbeatMissing, WorkerID: id, Pool: pool, Summary: id + " missed heartbeats"}
}

func TestNotificationTitle(t *testing.T) {
	errorRate := Alert{Rule: RuleErrorRate, WorkerID: "w-09", Pool: "email", Summary: "w-09 error rate 40%"}
	underSize := func(pool string) Alert {
		return Alert{Rule: RulePoolUnderSize, Pool: pool, Summary: "pool " + pool + " under size"}
	}
	notApplied := Alert{Rule: RuleCommandNotApplied, WorkerID: "w-01", Pool: "billing", Summary: "w-01 did not drain"}
	storeDown := Alert{Rule: RuleStoreUnavailable, Summary: "state store unavailable"}

	tests := []struct {
		name string
		n    Notification
		want string
	}{
		{"nothing", Notification{}, ""},
		{"one firing", Notification{Firing: []Alert{missed("w-01", "billing")}}, "[FIRING] w-01 missed heartbeats"},
		{"one resolved", Notification{Resolved: []Alert{missed("w-01", "billing")}}, "[RESOLVED] w-01 missed heartbeats"},
		{
			"same rule same pool",
			Notification{Firing: []Alert{missed("w-01", "billing"), missed("w-02", "billing"), missed("w-03", "billing")}},
			"[FIRING] 3 workers missed heartbeats in pool billing",
		},
		{
			"same rule two pools",
			Notification{Firing: []Alert{missed("w-01", "billing"), missed("w-02", "email")}},
			"[FIRING] 2 workers missed heartbeats",
		},
		{
			"error rates in one pool",
			Notification{Firing: []Alert{errorRate, {Rule: RuleErrorRate, WorkerID: "w-10", Pool: "email"}}},
			"[FIRING] 2 workers above the error-rate threshold in pool email",
		},
		{
			"pools under size",
			Notification{Firing: []Alert{underSize("billing"), underSize("email")}},
			"[FIRING] 2 pools under their desired size",
		},
		{
			"commands not applied",
			Notification{Firing: []Alert{notApplied, {Rule: RuleCommandNotApplied, WorkerID: "w-02", Pool: "billing"}}},
			"[FIRING] 2 commands not applied in pool billing",
		},
		{
			"mixed rules",
			Notification{Firing: []Alert{missed("w-01", "billing"), errorRate}},
			"[FIRING] 2 alerts",
		},
		{
			"two store alerts",
			Notification{Firing: []Alert{storeDown, storeDown}},
			"[FIRING] 2 alerts",
		},
		{
			"firing and resolved",
			Notification{
				Firing:   []Alert{missed("w-01", "billing"), errorRate},
				Resolved: []Alert{missed("w-02", "billing")},
			},
			"[FIRING] 2 alerts, [RESOLVED] w-02 missed heartbeats",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.n.Title(); got != tt.want {
				t.Errorf("Title = %q, want %q", got, tt.want)
			}
			if empty := tt.n.Empty(); empty != (tt.want == "") {
				t.Errorf("Empty = %v", empty)
			}
		})
	}
}

func TestFingerprintAndSubject(t *testing.T) {
	tests := []struct {
		alert       Alert
		fingerprint string
		subject     string
	}{
		{Alert{Rule: RuleHeartbeatMissing, Pool: "billing", WorkerID: "w-01"}, "heartbeat_missing/worker/w-01", "worker w-01 in pool billing"},
		{Alert{Rule: RulePoolUnderSize, Pool: "billing"}, "pool_under_size/pool/billing", "pool billing"},
		{Alert{Rule: RuleStoreUnavailable}, "store_unavailable/fleet", "control plane"},
	}
	for _, tt := range tests {
		a := tt.alert
		if got := Fingerprint(a.Rule, a.Pool, a.WorkerID); got != tt.fingerprint {
			t.Errorf("Fingerprint = %q, want %q", got, tt.fingerprint)
		}
		if got := a.Subject(); got != tt.subject {
			t.Errorf("Subject = %q, want %q", got, tt.subject)
		}
	}
}

func TestSortAlerts(t *testing.T) {
	alerts := []Alert{
		missed("w-02", "billing"),
		{Rule: RuleErrorRate, WorkerID: "w-01", Pool: "billing"},
		missed("w-01", "email"),
		missed("w-01", "billing"),
	}
	SortAlerts(alerts)
	want := []string{"error_rate/billing/w-01", "heartbeat_missing/billing/w-01", "heartbeat_missing/billing/w-02", "heartbeat_missing/email/w-01"}
	for i, a := range alerts {
		if got := string(a.Rule) + "/" + a.Pool + "/" + a.WorkerID; got != want[i] {
			t.Errorf("alerts[%d] = %s, want %s", i, got, want[i])
		}
	}
}
