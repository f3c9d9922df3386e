package clustertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
	store "github.com/verifier/controlplane/app/redis"
)

// TestClusterTopology runs two replicas on a three-master Redis Cluster and
// checks heartbeats, commands, listing, alerts, settings and live updates.
func TestClusterTopology(t *testing.T) {
	t.Parallel()
	c := StartCluster(t)
	runTopology(t, map[string]string{"REDIS_ADDR": strings.Join(c.Addrs, ",")})
}

// TestSentinelTopology runs the same checks through a Sentinel.
func TestSentinelTopology(t *testing.T) {
	t.Parallel()
	s := StartSentinel(t)
	runTopology(t, map[string]string{"REDIS_ADDR": s.SentinelAddr, "REDIS_MASTER_NAME": s.MasterName})
}

// runTopology starts replicas a and b on the Redis that redisEnv names and
// exercises every feature across them: what a does, b reads, and the
// reverse. Each subtest reports its own failure, so one broken feature does
// not hide the state of the others.
func runTopology(t *testing.T, redisEnv map[string]string) {
	slack := startSlack(t)
	env := baseEnv(redisEnv, slack.URL)
	a := startReplica(t, "a", env, slog.LevelWarn)
	b := startReplica(t, "b", env, slog.LevelWarn)

	t.Run("heartbeat", func(t *testing.T) {
		desired, err := a.api.heartbeat("w-1", "billing", "running")
		if err != nil {
			t.Fatalf("heartbeat on replica a: %v", err)
		}
		if desired != "running" {
			t.Errorf("heartbeat response: desired_state %q, want running", desired)
		}
		var w workerJSON
		if err := b.api.getJSON("/api/workers/w-1", &w); err != nil {
			t.Fatalf("replica b: %v", err)
		}
		if w.Pool != "billing" || w.Status != "running" || w.DesiredState != "running" || w.Stale {
			t.Errorf("replica b reads w-1 as %+v, want pool billing, status running, desired_state running, not stale", w)
		}
	})

	t.Run("command", func(t *testing.T) {
		body, err := b.api.postJSON("/api/workers/w-1/pause", nil)
		if err != nil {
			t.Fatalf("pause on replica b: %v", err)
		}
		if !strings.Contains(string(body), `"desired_state":"paused"`) {
			t.Errorf("pause response has no desired_state paused: %s", body)
		}
		desired, err := a.api.heartbeat("w-1", "billing", "running")
		if err != nil {
			t.Fatalf("next heartbeat on replica a: %v", err)
		}
		if desired != "paused" {
			t.Errorf("next heartbeat after the pause: desired_state %q, want paused", desired)
		}
		if _, err := a.api.heartbeat("w-1", "billing", "paused"); err != nil {
			t.Fatalf("heartbeat reporting paused: %v", err)
		}
		var w workerJSON
		if err := b.api.getJSON("/api/workers/w-1", &w); err != nil {
			t.Fatalf("replica b: %v", err)
		}
		if w.Status != "paused" || w.DesiredState != "paused" {
			t.Errorf("replica b reads w-1 as %+v, want status and desired_state paused", w)
		}
	})

	t.Run("listing", func(t *testing.T) {
		for _, hb := range []struct{ id, pool string }{{"w-2", "billing"}, {"w-3", "emails"}} {
			if _, err := a.api.heartbeat(hb.id, hb.pool, "running"); err != nil {
				t.Fatalf("heartbeat %s: %v", hb.id, err)
			}
		}
		var list workerListJSON
		if err := b.api.getJSON("/api/workers?pool=billing", &list); err != nil {
			t.Fatalf("replica b: %v", err)
		}
		var ids []string
		for _, w := range list.Workers {
			ids = append(ids, w.ID)
		}
		if list.Total != 2 || strings.Join(ids, ",") != "w-1,w-2" {
			t.Errorf("GET /api/workers?pool=billing on replica b: total %d, ids %v; want 2, [w-1 w-2]", list.Total, ids)
		}

		if _, err := a.api.postJSON("/api/pools/billing/scale", map[string]int{"desired_count": 2}); err != nil {
			t.Fatalf("scale on replica a: %v", err)
		}
		var pools poolListJSON
		if err := b.api.getJSON("/api/pools", &pools); err != nil {
			t.Fatalf("replica b: %v", err)
		}
		names := map[string]poolJSON{}
		for _, p := range pools.Pools {
			names[p.Pool] = p
		}
		if len(names) != 2 || names["billing"].Live != 2 || names["emails"].Live != 1 {
			t.Errorf("GET /api/pools on replica b: %+v, want billing with 2 live and emails with 1", pools.Pools)
		}
		var billing poolJSON
		if err := b.api.getJSON("/api/pools/billing", &billing); err != nil {
			t.Fatalf("replica b: %v", err)
		}
		if billing.DesiredCount == nil || *billing.DesiredCount != 2 {
			t.Errorf("GET /api/pools/billing on replica b: desired_count %v, want 2", billing.DesiredCount)
		}
	})

	// From here on, the listed workers stay live, so the silent worker below
	// is the only one that can raise an alert.
	keepAlive(t, a.api, map[string]string{"w-1": "billing", "w-2": "billing", "w-3": "emails"})

	t.Run("alert", func(t *testing.T) {
		if _, err := b.api.heartbeat("w-silent", "emails", "running"); err != nil {
			t.Fatalf("heartbeat w-silent: %v", err)
		}
		waitFor(t, heartbeatGrace+5*checkInterval, func() string {
			if slack.mentioning("w-silent") == 0 {
				return fmt.Sprintf("a Slack message about w-silent (messages so far: %q)", slack.all())
			}
			return ""
		})
		// Later checks see the incident as notified and send nothing more.
		time.Sleep(3 * checkInterval)
		if n := slack.mentioning("w-silent"); n != 1 {
			t.Errorf("%d Slack messages mention w-silent, want 1: %q", n, slack.all())
		}
		if n := len(slack.all()); n != 1 {
			t.Errorf("%d Slack messages in all, want 1: %q", n, slack.all())
		}
	})

	t.Run("settings", func(t *testing.T) {
		form := url.Values{
			"alerts_enabled":            {"true"},
			"check_interval_seconds":    {strconv.Itoa(int(checkInterval / time.Second))},
			"heartbeat_grace_seconds":   {strconv.Itoa(int(heartbeatGrace / time.Second))},
			"cooldown_seconds":          {"120"},
			"error_rate_threshold":      {"10"},
			"min_jobs":                  {"20"},
			"snapshot_interval_seconds": {"60"},
		}
		if err := a.api.postSettings(form); err != nil {
			t.Fatalf("replica a: %v", err)
		}
		if got := a.app.Settings.Current().Cooldown; got != 120*time.Second {
			t.Errorf("replica a: cooldown %s after saving 120 s", got)
		}
		// Settings reload on every replica when the change is announced over
		// pub/sub, and every 5 s regardless, so 3 s shows the announcement.
		waitFor(t, 3*time.Second, func() string {
			if got := b.app.Settings.Current().Cooldown; got != 120*time.Second {
				return fmt.Sprintf("replica b's cooldown to become 120 s (still %s)", got)
			}
			return ""
		})
		if !b.app.Settings.Current().AlertsEnabled {
			t.Errorf("replica b: alerts turned off by a form that kept them on")
		}
	})

	t.Run("live update", func(t *testing.T) {
		stream := openEvents(t, b.app.URL(), "view=overview")
		if _, ok := stream.waitEvent(2*time.Second, func(ev sseEvent) bool { return ev.Name == "workers" }); !ok {
			t.Fatalf("replica b's stream sent no initial workers table within 2 s")
		}
		stream.drain()
		if _, err := a.api.postJSON("/api/workers/w-2/pause", nil); err != nil {
			t.Fatalf("pause w-2 on replica a: %v", err)
		}
		// Replica b learns that w-2 changed only from the pub/sub
		// announcement, because its page shows the same workers as before.
		ev, ok := stream.waitEvent(3*time.Second, func(ev sseEvent) bool { return ev.Name == "row-w-2" })
		if !ok {
			t.Fatalf("replica b's stream sent no row-w-2 event within 3 s of the pause on replica a")
		}
		if !strings.Contains(ev.Data, "paused") {
			t.Errorf("row-w-2 event does not show paused:\n%s", ev.Data)
		}
	})
}

// TestClusterStoreOperations calls each multi-key operation of the Redis
// store on a Cluster, where the fixed key names of one worker, and the
// fleet-wide keys, hash to different slots. It names each operation that
// fails there and why.
func TestClusterStoreOperations(t *testing.T) {
	t.Parallel()
	c := StartCluster(t)
	rdb := c.Client(t)
	st := store.New(rdb, store.Options{})
	ctx := context.Background()

	// Say which keys of one heartbeat share a slot, for the failure
	// messages below.
	var slots []string
	for _, k := range []string{"worker:w-1:status", "worker:w-1:heartbeat", "worker:w-1:desired_state", "workers:active", "pools:known", "alerts:state", "alerts:resolved"} {
		slot, err := rdb.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", k, err)
		}
		slots = append(slots, fmt.Sprintf("%s=%d", k, slot))
	}
	t.Logf("hash slots: %s", strings.Join(slots, " "))

	t.Run("Heartbeat", func(t *testing.T) {
		_, err := st.Heartbeat(ctx, &fleet.Heartbeat{
			ID: "w-1", Pool: "billing", Status: fleet.StateRunning, ReceivedAt: time.Now(),
			Metrics: map[string]float64{"jobs_processed": 1},
		})
		if err != nil {
			t.Errorf("Store.Heartbeat on Cluster: %v (crossslot: %v)", err, errors.Is(err, goredis.ErrCrossSlot))
		}
	})

	t.Run("SaveAlertStates", func(t *testing.T) {
		next := map[string]fleet.AlertState{"heartbeat_missing/worker/w-1": {
			Alert: fleet.Alert{Fingerprint: "heartbeat_missing/worker/w-1", Rule: fleet.RuleHeartbeatMissing, Status: fleet.AlertFiring},
		}}
		if err := st.SaveAlertStates(ctx, next, nil); err != nil {
			t.Errorf("Store.SaveAlertStates on Cluster: %v (crossslot: %v)", err, errors.Is(err, goredis.ErrCrossSlot))
		}
	})

	t.Run("SetSettingOverrides", func(t *testing.T) {
		if err := st.SetSettingOverrides(ctx, map[string]string{"cooldown_seconds": "60"}, nil); err != nil {
			t.Errorf("Store.SetSettingOverrides on Cluster: %v", err)
		}
	})

	t.Run("SetDesired", func(t *testing.T) {
		cmd := fleet.Command{Action: fleet.ActionPause, From: fleet.StateRunning, To: fleet.StatePaused, Actor: "test", Source: "api", At: time.Now()}
		if err := st.SetDesired(ctx, "w-1", cmd); err != nil {
			t.Errorf("Store.SetDesired on Cluster: %v", err)
		}
	})

	t.Run("Scale", func(t *testing.T) {
		if _, err := st.Scale(ctx, "billing", 3); err != nil {
			t.Errorf("Store.Scale on Cluster: %v", err)
		}
	})

	t.Run("SchedulerLock", func(t *testing.T) {
		ok, err := st.AcquireOrRenewLock(ctx, "replica-1", 15*time.Second)
		if err != nil || !ok {
			t.Fatalf("Store.AcquireOrRenewLock on Cluster: held %v, err %v", ok, err)
		}
		if ok, err := st.AcquireOrRenewLock(ctx, "replica-1", 15*time.Second); err != nil || !ok {
			t.Errorf("renew by the holder on Cluster: held %v, err %v", ok, err)
		}
		if ok, err := st.AcquireOrRenewLock(ctx, "replica-2", 15*time.Second); err != nil || ok {
			t.Errorf("acquire by another replica on Cluster: held %v, err %v; want false, nil", ok, err)
		}
		if err := st.ReleaseLock(ctx, "replica-1"); err != nil {
			t.Errorf("Store.ReleaseLock on Cluster: %v", err)
		}
	})

	t.Run("PubSub", func(t *testing.T) {
		// The subscriber's connection goes to the node that owns the
		// channel's slot; Redis Cluster forwards a PUBLISH sent to any node
		// to every node.
		ps := rdb.Subscribe(ctx, store.EventsChannel)
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("subscribe on Cluster: %v", err)
		}
		for _, addr := range c.Addrs {
			node := goredis.NewClient(&goredis.Options{Addr: addr})
			err := node.Publish(ctx, store.EventsChannel, "from "+addr).Err()
			node.Close()
			if err != nil {
				t.Fatalf("PUBLISH on node %s: %v", addr, err)
			}
		}
		got := map[string]bool{}
		timeout := time.After(3 * time.Second)
		for len(got) < len(c.Addrs) {
			select {
			case msg := <-ps.Channel():
				got[msg.Payload] = true
			case <-timeout:
				t.Fatalf("received %v of the messages published on every node within 3 s", got)
			}
		}
	})
}
