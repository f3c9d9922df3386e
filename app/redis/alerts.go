package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
)

// Alerting keys.
const (
	alertStateKey    = "alerts:state"        // hash: fingerprint -> JSON fleet.AlertState
	alertHistoryKey  = "alerts:resolved"     // list: JSON fleet.Alert, newest first, capped
	silencesKey      = "alerts:silences"     // hash: silence id -> JSON fleet.Silence
	samplesKey       = "alerts:samples"      // hash: worker id -> two counter samples, "at p f at p f"
	outageKey        = "alerts:store_outage" // string: "<start ms>:<end ms>" of the last Redis outage
	alertHistoryCap  = 200
	resolvedClaimTTL = 24 * time.Hour
)

// notifyClaimKey is claimed (SET NX) by the check that sends a firing
// notification. It expires after the cooldown, so within one cooldown at
// most one replica and one check notify an alert.
func notifyClaimKey(fp string) string { return "alerts:notified:" + fp } // string, expires after the cooldown

// resolvedClaimKey is claimed by the check that sends the resolved
// notification of the incident that started at startsAt.
func resolvedClaimKey(fp string, startsAt time.Time) string { // string, expires after a day
	return "alerts:resolved-notified:" + fp + ":" + strconv.FormatInt(startsAt.UnixMilli(), 10)
}

// AlertStates returns every alert's lifecycle record.
func (s *Store) AlertStates(ctx context.Context) (map[string]fleet.AlertState, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	raw, err := s.rdb.HGetAll(ctx, alertStateKey).Result()
	if err != nil {
		return nil, wrap("read alert states", err)
	}
	out := make(map[string]fleet.AlertState, len(raw))
	for fp, v := range raw {
		var st fleet.AlertState
		if json.Unmarshal([]byte(v), &st) == nil {
			out[fp] = st
		}
	}
	return out, nil
}

// SaveAlertStates replaces the lifecycle records with next and appends the
// resolved alerts to the history list, then announces the change.
func (s *Store) SaveAlertStates(ctx context.Context, next map[string]fleet.AlertState, resolved []fleet.Alert) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	fields := make([]any, 0, 2*len(next))
	for fp, st := range next {
		b, err := json.Marshal(st)
		if err != nil {
			return fmt.Errorf("encode alert state: %w", err)
		}
		fields = append(fields, fp, b)
	}
	// Two steps, each atomic on its own key, so that this works on Redis
	// Cluster too, where the two keys are in different hash slots.
	_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Del(ctx, alertStateKey)
		if len(fields) > 0 {
			p.HSet(ctx, alertStateKey, fields...)
		}
		return nil
	})
	if err != nil {
		return wrap("save alert states", err)
	}
	_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, a := range resolved {
			b, _ := json.Marshal(a)
			p.LPush(ctx, alertHistoryKey, b)
		}
		p.LTrim(ctx, alertHistoryKey, 0, alertHistoryCap-1)
		p.Publish(ctx, s.channel, "alerts")
		return nil
	})
	if err != nil {
		return wrap("save resolved alerts", err)
	}
	return nil
}

// ResolvedAlerts returns up to limit recently resolved alerts, newest first.
func (s *Store) ResolvedAlerts(ctx context.Context, limit int) ([]fleet.Alert, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	raw, err := s.rdb.LRange(ctx, alertHistoryKey, 0, int64(limit)-1).Result()
	if err != nil {
		return nil, wrap("read resolved alerts", err)
	}
	out := make([]fleet.Alert, 0, len(raw))
	for _, v := range raw {
		var a fleet.Alert
		if json.Unmarshal([]byte(v), &a) == nil {
			out = append(out, a)
		}
	}
	return out, nil
}

// NotifyClaim is the outcome of ClaimNotify.
type NotifyClaim struct {
	// Won is set when this caller claimed the notification and must send it.
	Won bool
	// SameIncident is set when the claim is held for the same incident
	// (another replica or an earlier check sent it), at ClaimedAt.
	SameIncident bool
	ClaimedAt    time.Time
}

// claimNotifyScript takes the notify claim of an alert, or returns the
// holder's value.
//
//	KEYS[1] the claim key
//	ARGV[1] "<incident start ms>:<claim time ms>"
//	ARGV[2] the claim's expiry (the cooldown) in milliseconds
//
// It returns "" when the claim was taken, else the current value.
var claimNotifyScript = goredis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return '' end
return redis.call('GET', KEYS[1]) or ''
`)

// ClaimNotify atomically claims the right to send a firing notification of
// the incident of fp that started at startsAt, for one cooldown. Within the
// cooldown no other caller wins it, so a flapping alert's new incident waits for
// the cooldown to end.
func (s *Store) ClaimNotify(ctx context.Context, fp string, startsAt, now time.Time, cooldown time.Duration) (NotifyClaim, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if cooldown < time.Second {
		cooldown = time.Second
	}
	value := strconv.FormatInt(startsAt.UnixMilli(), 10) + ":" + strconv.FormatInt(now.UnixMilli(), 10)
	held, err := claimNotifyScript.Run(ctx, s.rdb, []string{notifyClaimKey(fp)}, value, cooldown.Milliseconds()).Text()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return NotifyClaim{}, wrap("claim notification", err)
	}
	if held == "" {
		return NotifyClaim{Won: true, ClaimedAt: now}, nil
	}
	start, at, _ := strings.Cut(held, ":")
	ms, _ := strconv.ParseInt(at, 10, 64)
	return NotifyClaim{
		SameIncident: start == strconv.FormatInt(startsAt.UnixMilli(), 10),
		ClaimedAt:    time.UnixMilli(ms).UTC(),
	}, nil
}

// ClaimResolved atomically claims the resolved notification of an incident.
func (s *Store) ClaimResolved(ctx context.Context, a fleet.Alert) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ok, err := s.rdb.SetNX(ctx, resolvedClaimKey(a.Fingerprint, a.StartsAt), "1", resolvedClaimTTL).Result()
	if err != nil {
		return false, wrap("claim resolved notification", err)
	}
	return ok, nil
}

// Silences returns every silence, expired ones included.
func (s *Store) Silences(ctx context.Context) ([]fleet.Silence, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	raw, err := s.rdb.HGetAll(ctx, silencesKey).Result()
	if err != nil {
		return nil, wrap("read silences", err)
	}
	out := make([]fleet.Silence, 0, len(raw))
	for _, v := range raw {
		var sl fleet.Silence
		if json.Unmarshal([]byte(v), &sl) == nil {
			out = append(out, sl)
		}
	}
	return out, nil
}

// AddSilence stores a silence and announces it.
func (s *Store) AddSilence(ctx context.Context, sl fleet.Silence) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	b, err := json.Marshal(sl)
	if err != nil {
		return fmt.Errorf("encode silence: %w", err)
	}
	_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, silencesKey, sl.ID, b)
		p.Publish(ctx, s.channel, "alerts")
		return nil
	})
	if err != nil {
		return wrap("add silence", err)
	}
	return nil
}

// RemoveSilence deletes a silence; ENOTFOUND when there is none with id.
func (s *Store) RemoveSilence(ctx context.Context, id string) (fleet.Silence, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	raw, err := s.rdb.HGet(ctx, silencesKey, id).Result()
	if errors.Is(err, goredis.Nil) {
		return fleet.Silence{}, fleet.Errorf(fleet.ENOTFOUND, "id", "silence %q not found", id)
	}
	if err != nil {
		return fleet.Silence{}, wrap("read silence", err)
	}
	var sl fleet.Silence
	_ = json.Unmarshal([]byte(raw), &sl)
	_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.HDel(ctx, silencesKey, id)
		p.Publish(ctx, s.channel, "alerts")
		return nil
	})
	if err != nil {
		return fleet.Silence{}, wrap("remove silence", err)
	}
	return sl, nil
}

// PruneSilences deletes silences that ended before now.
func (s *Store) PruneSilences(ctx context.Context, now time.Time) error {
	all, err := s.Silences(ctx)
	if err != nil {
		return err
	}
	var ended []string
	for _, sl := range all {
		if !now.Before(sl.Until) {
			ended = append(ended, sl.ID)
		}
	}
	if len(ended) == 0 {
		return nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.rdb.HDel(ctx, silencesKey, ended...).Err(); err != nil {
		return wrap("prune silences", err)
	}
	return nil
}

// CounterSample is a worker's cumulative counters at one instant.
type CounterSample struct {
	At        time.Time
	Processed float64
	Failed    float64
}

// Samples returns each worker's two stored counter samples, older first.
func (s *Store) Samples(ctx context.Context) (map[string][2]CounterSample, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	raw, err := s.rdb.HGetAll(ctx, samplesKey).Result()
	if err != nil {
		return nil, wrap("read counter samples", err)
	}
	out := make(map[string][2]CounterSample, len(raw))
	for id, v := range raw {
		f := strings.Fields(v)
		if len(f) != 6 {
			continue
		}
		var pair [2]CounterSample
		for i := range 2 {
			ms, _ := strconv.ParseInt(f[3*i], 10, 64)
			pair[i].At = time.UnixMilli(ms).UTC()
			pair[i].Processed, _ = strconv.ParseFloat(f[3*i+1], 64)
			pair[i].Failed, _ = strconv.ParseFloat(f[3*i+2], 64)
		}
		out[id] = pair
	}
	return out, nil
}

// SaveSamples replaces the counter samples, dropping workers not in samples.
func (s *Store) SaveSamples(ctx context.Context, samples map[string][2]CounterSample) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	fields := make([]any, 0, 2*len(samples))
	for id, pair := range samples {
		var b strings.Builder
		for i, c := range pair {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%d %s %s", c.At.UnixMilli(), strconv.FormatFloat(c.Processed, 'f', -1, 64), strconv.FormatFloat(c.Failed, 'f', -1, 64))
		}
		fields = append(fields, id, b.String())
	}
	_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Del(ctx, samplesKey)
		if len(fields) > 0 {
			p.HSet(ctx, samplesKey, fields...)
		}
		return nil
	})
	if err != nil {
		return wrap("save counter samples", err)
	}
	return nil
}

// StoreOutage returns the start and end of the last Redis outage that a
// replica noticed, or zero times.
func (s *Store) StoreOutage(ctx context.Context) (start, end time.Time, err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	v, err := s.rdb.Get(ctx, outageKey).Result()
	if errors.Is(err, goredis.Nil) {
		return time.Time{}, time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, time.Time{}, wrap("read outage", err)
	}
	a, b, _ := strings.Cut(v, ":")
	startMS, _ := strconv.ParseInt(a, 10, 64)
	endMS, _ := strconv.ParseInt(b, 10, 64)
	return time.UnixMilli(startMS).UTC(), time.UnixMilli(endMS).UTC(), nil
}

// SetStoreOutage records a Redis outage; it expires after a day, long after
// any grace period.
func (s *Store) SetStoreOutage(ctx context.Context, start, end time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	v := strconv.FormatInt(start.UnixMilli(), 10) + ":" + strconv.FormatInt(end.UnixMilli(), 10)
	if err := s.rdb.Set(ctx, outageKey, v, 24*time.Hour).Err(); err != nil {
		return wrap("write outage", err)
	}
	return nil
}
