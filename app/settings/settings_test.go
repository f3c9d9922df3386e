package settings_test

import (
	"context"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/settings"
	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// envSettings are the environment's values in these tests.
var envSettings = fleet.Settings{
	CheckInterval: 15 * time.Second, HeartbeatGrace: 30 * time.Second, Cooldown: 15 * time.Minute,
	ErrorRateThreshold: 10, MinJobs: 20, SnapshotInterval: time.Minute,
}

const heartbeatInterval = 5 * time.Second

// write is one call of SetSettingOverrides.
type write struct {
	set   map[string]string
	reset []string
}

// recordingStore is the Redis store, keeping every overrides write.
type recordingStore struct {
	*redis.Store
	mu     sync.Mutex
	writes []write
}

func (s *recordingStore) SetSettingOverrides(ctx context.Context, set map[string]string, reset []string) error {
	s.mu.Lock()
	s.writes = append(s.writes, write{set: maps.Clone(set), reset: slices.Clone(reset)})
	s.mu.Unlock()
	return s.Store.SetSettingOverrides(ctx, set, reset)
}

func (s *recordingStore) last(t *testing.T) write {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.writes) == 0 {
		t.Fatal("nothing was written")
	}
	return s.writes[len(s.writes)-1]
}

// newRuntimes returns n runtimes on one Redis, as on n replicas, and a
// client on that Redis.
func newRuntimes(t *testing.T, n int) ([]*settings.Runtime, []*recordingStore, *goredis.Client) {
	t.Helper()
	_, _, client := testenv.Redis(t)
	var runtimes []*settings.Runtime
	var stores []*recordingStore
	for range n {
		s := &recordingStore{Store: redis.New(client, redis.Options{})}
		r := settings.New(envSettings, heartbeatInterval, s)
		if err := r.Reload(context.Background()); err != nil {
			t.Fatalf("reload: %v", err)
		}
		runtimes, stores = append(runtimes, r), append(stores, s)
	}
	return runtimes, stores, client
}

// form returns the Settings form as the page renders it from r, with
// changes applied. A bool field is absent when false, like an unchecked
// checkbox.
func form(r *settings.Runtime, changes map[string]string) map[string]string {
	f := map[string]string{}
	for _, field := range settings.Fields {
		v := settings.Value(r.Current(), field.Name)
		if field.Kind == settings.KindBool && v == "false" {
			continue
		}
		f[field.Name] = v
	}
	maps.Copy(f, changes)
	return f
}

func save(t *testing.T, r *settings.Runtime, f map[string]string, reset ...string) []settings.Change {
	t.Helper()
	changes, invalid, err := r.Save(context.Background(), f, reset)
	if err != nil || len(invalid) > 0 {
		t.Fatalf("save %v reset %v: invalid %v, err %v", f, reset, invalid, err)
	}
	return changes
}

func TestSaveReportsEveryInvalidField(t *testing.T) {
	rs, stores, _ := newRuntimes(t, 1)
	r := rs[0]
	_, invalid, err := r.Save(context.Background(), form(r, map[string]string{
		"check_interval_seconds":    "abc",
		"heartbeat_grace_seconds":   "2", // below the heartbeat interval
		"cooldown_seconds":          "-1",
		"error_rate_threshold":      "200",
		"min_jobs":                  "1.5",
		"snapshot_interval_seconds": "1",
		"alerts_enabled":            "maybe",
	}), nil)
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	want := []string{"alerts_enabled", "check_interval_seconds", "cooldown_seconds", "error_rate_threshold", "heartbeat_grace_seconds", "min_jobs", "snapshot_interval_seconds"}
	if got := slices.Sorted(maps.Keys(invalid)); !slices.Equal(got, want) {
		t.Errorf("invalid fields %v, want %v", got, want)
	}
	for name, msg := range invalid {
		if msg == "" {
			t.Errorf("%s has no message", name)
		}
	}
	if len(stores[0].writes) != 0 {
		t.Errorf("an invalid form wrote %+v", stores[0].writes)
	}
	if r.Current() != envSettings {
		t.Errorf("settings in force changed to %+v", r.Current())
	}
}

func TestSaveRejectsOutOfRangeNumbers(t *testing.T) {
	tests := []struct{ field, value string }{
		// NaN compares false with both bounds of the threshold.
		{"error_rate_threshold", "NaN"},
		// 2^55+60 seconds overflow time.Duration to exactly 60 s.
		{"check_interval_seconds", "36028797018964028"},
		{"heartbeat_grace_seconds", "36028797018964028"},
	}
	for _, tt := range tests {
		t.Run(tt.field+"="+tt.value, func(t *testing.T) {
			rs, _, _ := newRuntimes(t, 1)
			_, invalid, err := rs[0].Save(context.Background(), form(rs[0], map[string]string{tt.field: tt.value}), nil)
			if err != nil {
				t.Fatalf("save: %v", err)
			}
			if invalid[tt.field] == "" {
				t.Errorf("%s=%s accepted; in force: %+v", tt.field, tt.value, rs[0].Current())
			}
		})
	}
}

func TestSaveWritesOnlyChanges(t *testing.T) {
	rs, stores, client := newRuntimes(t, 1)
	r := rs[0]

	changes := save(t, r, form(r, map[string]string{"min_jobs": "50"}))
	if w := stores[0].last(t); !maps.Equal(w.set, map[string]string{"min_jobs": "50"}) || len(w.reset) != 0 {
		t.Errorf("changing min_jobs wrote %+v", w)
	}
	if len(changes) != 1 || changes[0] != (settings.Change{Name: "min_jobs", Before: "20", After: "50"}) {
		t.Errorf("changes %+v, want min_jobs 20 to 50", changes)
	}
	if !r.Overridden("min_jobs") || r.Overridden("cooldown_seconds") {
		t.Errorf("overridden: min_jobs %v, cooldown_seconds %v; want true and false", r.Overridden("min_jobs"), r.Overridden("cooldown_seconds"))
	}

	// A second save changes only the cooldown, and min_jobs stays as it is.
	save(t, r, form(r, map[string]string{"cooldown_seconds": "60"}))
	if w := stores[0].last(t); !maps.Equal(w.set, map[string]string{"cooldown_seconds": "60"}) {
		t.Errorf("changing cooldown_seconds wrote %+v, want only cooldown_seconds", w)
	}
	stored := client.HGetAll(context.Background(), "settings:overrides").Val()
	if !maps.Equal(stored, map[string]string{"min_jobs": "50", "cooldown_seconds": "60"}) {
		t.Errorf("stored overrides %v", stored)
	}
}

func TestSaveUnchangedFormStoresNothing(t *testing.T) {
	rs, _, client := newRuntimes(t, 1)
	if changes := save(t, rs[0], form(rs[0], nil)); len(changes) != 0 {
		t.Errorf("an unchanged form reported changes %+v", changes)
	}
	if stored := client.HGetAll(context.Background(), "settings:overrides").Val(); len(stored) != 0 {
		t.Errorf("an unchanged form stored overrides %v", stored)
	}
	for _, f := range settings.Fields {
		if rs[0].Overridden(f.Name) {
			t.Errorf("%s shows as overridden", f.Name)
		}
	}
}

func TestResetReturnsToEnvironment(t *testing.T) {
	rs, _, client := newRuntimes(t, 1)
	r := rs[0]
	save(t, r, form(r, map[string]string{"cooldown_seconds": "60", "alerts_enabled": "true"}))
	if r.Current().Cooldown != time.Minute || !r.Current().AlertsEnabled {
		t.Fatalf("after save: %+v", r.Current())
	}

	changes := save(t, r, form(r, nil), "cooldown_seconds", "alerts_enabled")
	if got := r.Current(); got != envSettings {
		t.Errorf("after reset: %+v, want the environment's %+v", got, envSettings)
	}
	if r.Overridden("cooldown_seconds") || r.Overridden("alerts_enabled") {
		t.Errorf("reset fields still show as overridden")
	}
	if stored := client.HGetAll(context.Background(), "settings:overrides").Val(); len(stored) != 0 {
		t.Errorf("after reset the overrides are %v, want none", stored)
	}
	if len(changes) != 2 {
		t.Errorf("reset reported changes %+v, want cooldown_seconds and alerts_enabled", changes)
	}
}

func TestSecondRuntimeSeesChangeAfterReload(t *testing.T) {
	rs, _, _ := newRuntimes(t, 2)
	a, b := rs[0], rs[1]
	save(t, a, form(a, map[string]string{"error_rate_threshold": "2.5", "auto_actions_enabled": "true"}))
	if b.Current().ErrorRateThreshold != 10 {
		t.Fatalf("b changed before reloading: %+v", b.Current())
	}
	if err := b.Reload(context.Background()); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := b.Current(); got.ErrorRateThreshold != 2.5 || !got.AutoActionsEnabled {
		t.Errorf("b after reload: %+v, want threshold 2.5 and automatic actions on", got)
	}
	if !b.Overridden("error_rate_threshold") {
		t.Errorf("b does not show error_rate_threshold as overridden")
	}
}

// TestSaveKeepsAnotherReplicasReset saves on a replica that has not yet
// reloaded since another replica reset a setting. The form there shows the
// old override, untouched, and saving it must not bring that override back.
func TestSaveKeepsAnotherReplicasReset(t *testing.T) {
	rs, _, _ := newRuntimes(t, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	save(t, a, form(a, map[string]string{"min_jobs": "50"}))
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}

	save(t, a, form(a, nil), "min_jobs")
	save(t, b, form(b, map[string]string{"cooldown_seconds": "60"}))
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.Current(); got.MinJobs != envSettings.MinJobs || got.Cooldown != time.Minute {
		t.Errorf("after a reset on a and a cooldown change on b: min_jobs %d, cooldown %s; want %d and 1m0s", got.MinJobs, got.Cooldown, envSettings.MinJobs)
	}
}

func TestReloadKeepsSettingsOnInvalidStore(t *testing.T) {
	rs, _, client := newRuntimes(t, 1)
	r := rs[0]
	save(t, r, form(r, map[string]string{"min_jobs": "50"}))
	if err := client.HSet(context.Background(), "settings:overrides", "check_interval_seconds", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(context.Background()); err == nil {
		t.Errorf("reload of an invalid stored check interval returned no error")
	}
	if got := r.Current(); got.CheckInterval != envSettings.CheckInterval || got.MinJobs != 50 {
		t.Errorf("after a failed reload: %+v, want the settings in force kept", got)
	}
}
