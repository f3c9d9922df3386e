package clustertest

import (
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/testenv"
)

// lockExpiry is the scheduler lock's expiry (scheduler.Options.LockTTL's
// default): the longest a dead leader may block the periodic jobs.
const lockExpiry = 15 * time.Second

// TestReplicasShareState runs three replicas on one Redis and checks that
// what one replica receives, the others serve: heartbeats, commands,
// settings and live dashboard updates. Then it shuts down the scheduler's
// leader and checks that another replica takes over the alert checks
// without notifying an incident a second time.
func TestReplicasShareState(t *testing.T) {
	addr, db, _ := testenv.Redis(t)
	slack := startSlack(t)
	env := baseEnv(map[string]string{"REDIS_ADDR": addr, "REDIS_DB": strconv.Itoa(db)}, slack.URL)
	a := startReplica(t, "a", env, slog.LevelWarn)
	b := startReplica(t, "b", env, slog.LevelWarn)
	c := startReplica(t, "c", env, slog.LevelWarn)
	replicas := []*replica{a, b, c}

	// A dashboard on c, opened before the worker exists.
	stream := openEvents(t, c.app.URL(), "view=overview")
	if _, ok := stream.waitEvent(2*time.Second, func(ev sseEvent) bool { return ev.Name == "workers" }); !ok {
		t.Fatalf("replica c's stream sent no initial workers table within 2 s")
	}
	stream.drain()

	// A heartbeat received by a shows on b's API and on c's dashboard.
	if _, err := a.api.heartbeat("w-1", "billing", "running"); err != nil {
		t.Fatalf("heartbeat on replica a: %v", err)
	}
	var list workerListJSON
	if err := b.api.getJSON("/api/workers", &list); err != nil {
		t.Fatalf("replica b: %v", err)
	}
	if list.Total != 1 || len(list.Workers) != 1 || list.Workers[0].ID != "w-1" || list.Workers[0].Status != "running" {
		t.Errorf("GET /api/workers on replica b: %+v, want only w-1, running", list)
	}
	showsW1 := func(ev sseEvent) bool {
		return ev.Name == "row-w-1" || (ev.Name == "workers" && strings.Contains(ev.Data, "w-1"))
	}
	if _, ok := stream.waitEvent(2*time.Second, showsW1); !ok {
		t.Errorf("replica c's stream did not show w-1 within 2 s of its heartbeat on replica a")
	}

	// A pause given on b reaches the worker through c, and c's dashboard
	// shows it.
	stream.drain()
	if _, err := b.api.postJSON("/api/workers/w-1/pause", nil); err != nil {
		t.Fatalf("pause on replica b: %v", err)
	}
	desired, err := c.api.heartbeat("w-1", "billing", "running")
	if err != nil {
		t.Fatalf("heartbeat on replica c: %v", err)
	}
	if desired != "paused" {
		t.Errorf("heartbeat on replica c after the pause on replica b: desired_state %q, want paused", desired)
	}
	ev, ok := stream.waitEvent(2*time.Second, func(ev sseEvent) bool { return ev.Name == "row-w-1" })
	if !ok {
		t.Errorf("replica c's stream sent no row-w-1 event within 2 s of the pause on replica b")
	} else if !strings.Contains(ev.Data, "paused") {
		t.Errorf("row-w-1 event on replica c does not show paused:\n%s", ev.Data)
	}

	// A settings change on a is in force on b and c within seconds.
	form := url.Values{
		"alerts_enabled":            {"true"},
		"check_interval_seconds":    {strconv.Itoa(int(checkInterval / time.Second))},
		"heartbeat_grace_seconds":   {strconv.Itoa(int(heartbeatGrace / time.Second))},
		"cooldown_seconds":          {"300"},
		"error_rate_threshold":      {"25"},
		"min_jobs":                  {"20"},
		"snapshot_interval_seconds": {"60"},
	}
	if err := a.api.postSettings(form); err != nil {
		t.Fatalf("replica a: %v", err)
	}
	waitFor(t, 3*time.Second, func() string {
		for _, r := range replicas {
			s := r.app.Settings.Current()
			if s.Cooldown != 300*time.Second || s.ErrorRateThreshold != 25 {
				return fmt.Sprintf("replica %s to have cooldown 300 s and error-rate threshold 25 (has %s and %v)", r.name, s.Cooldown, s.ErrorRateThreshold)
			}
		}
		return ""
	})

	// Exactly one replica runs the scheduler.
	var leader *replica
	waitFor(t, 3*time.Second, func() string {
		var leaders []string
		leader = nil
		for _, r := range replicas {
			if r.app.Scheduler.Leader() {
				leaders = append(leaders, r.name)
				leader = r
			}
		}
		if len(leaders) != 1 {
			return fmt.Sprintf("exactly one scheduler leader (have %v)", leaders)
		}
		return ""
	})
	var survivors []*replica
	for _, r := range replicas {
		if r != leader {
			survivors = append(survivors, r)
		}
	}
	time.Sleep(time.Second)
	for _, r := range survivors {
		if r.app.Scheduler.Leader() {
			t.Errorf("replicas %s and %s both lead the scheduler", leader.name, r.name)
		}
	}

	// The leader notifies an incident: a worker that heartbeat once and went
	// silent. The paused worker stays live through a survivor.
	keepAlive(t, survivors[0].api, map[string]string{"w-1": "billing"})
	if _, err := survivors[1].api.heartbeat("w-silent", "emails", "running"); err != nil {
		t.Fatalf("heartbeat w-silent: %v", err)
	}
	waitFor(t, heartbeatGrace+5*checkInterval, func() string {
		if slack.mentioning("w-silent") == 0 {
			return fmt.Sprintf("a Slack message about w-silent (messages so far: %q)", slack.all())
		}
		return ""
	})

	// Shut the leader down: a survivor takes over within one lock expiry and
	// does not notify the incident again.
	stopped := time.Now()
	leader.shutdown()
	var next *replica
	waitFor(t, lockExpiry, func() string {
		for _, r := range survivors {
			if r.app.Scheduler.Leader() {
				next = r
				return ""
			}
		}
		return fmt.Sprintf("replica %s or %s to take over the scheduler from %s", survivors[0].name, survivors[1].name, leader.name)
	})
	t.Logf("replica %s took over the scheduler %s after replica %s shut down", next.name, time.Since(stopped).Round(100*time.Millisecond), leader.name)
	time.Sleep(4 * checkInterval)
	if n := slack.mentioning("w-silent"); n != 1 {
		t.Errorf("%d Slack messages mention w-silent after the takeover, want 1: %q", n, slack.all())
	}
	if n := len(slack.all()); n != 1 {
		t.Errorf("%d Slack messages in all, want 1: %q", n, slack.all())
	}
	for _, r := range survivors {
		if r != next && r.app.Scheduler.Leader() {
			t.Errorf("replicas %s and %s both lead the scheduler after the takeover", next.name, r.name)
		}
	}
}
