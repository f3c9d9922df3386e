// Package redis stores the control plane's live state in Redis under the
// fixed key names in keys.go. It works with go-redis' universal client, so
// the same code serves a standalone server, Sentinel and Cluster.
package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/fleet"
)

// Options tune the store. Zero fields take the documented defaults.
type Options struct {
	// WorkerTTL is the expiry of every per-worker key, refreshed by each
	// heartbeat: how long a silent worker's state is kept. Default 24 h.
	WorkerTTL time.Duration
	// Timeout bounds every call, so a stalled Redis fails fast. Default 500 ms.
	Timeout time.Duration
	// AuditCap is the length of the fleet-wide audit list. Default 10,000.
	AuditCap int64
	// WorkerAuditCap is the length of each worker's audit list. Default 50.
	WorkerAuditCap int64
}

// Store reads and writes live state. It is safe for concurrent use.
type Store struct {
	rdb  goredis.UniversalClient
	opts Options
	// cluster is set on Redis Cluster, which has no transaction across
	// hash slots: one worker's fixed key names fall in different slots.
	cluster bool
	channel string
}

// New returns a Store on rdb.
func New(rdb goredis.UniversalClient, opts Options) *Store {
	if opts.WorkerTTL <= 0 {
		opts.WorkerTTL = 24 * time.Hour
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 500 * time.Millisecond
	}
	if opts.AuditCap <= 0 {
		opts.AuditCap = 10_000
	}
	if opts.WorkerAuditCap <= 0 {
		opts.WorkerAuditCap = 50
	}
	_, cluster := rdb.(*goredis.ClusterClient)
	channel := EventsChannel
	if db := databaseOf(rdb); db != 0 {
		channel += ":" + strconv.Itoa(db)
	}
	return &Store{rdb: rdb, opts: opts, cluster: cluster, channel: channel}
}

// databaseOf returns the logical database a client uses.
func databaseOf(rdb goredis.UniversalClient) int {
	switch c := rdb.(type) {
	case *goredis.Client:
		return c.Options().DB
	case *goredis.Ring:
		return c.Options().DB
	}
	return 0
}

// Channel returns the pub/sub channel of this store's database.
func (s *Store) Channel() string { return s.channel }

// Client returns the underlying client, for pub/sub and the scheduler lock.
func (s *Store) Client() goredis.UniversalClient { return s.rdb }

// Timeout returns the deadline applied to each call.
func (s *Store) Timeout() time.Duration { return s.opts.Timeout }

func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.Timeout)
}

// Ping checks that Redis responds within the timeout.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return wrap("ping", err)
	}
	return nil
}

// Heartbeat records hb and returns the worker's desired state in one round
// trip: one transaction on a standalone server or Sentinel, and on Cluster
// one pipeline in which every key is written with its expiry atomically. It
// writes the status, the receive time, meta and metrics, the active set, the
// known pools and the index, refreshes the expiry of every per-worker key,
// and reads the desired state. It never writes the desired state.
func (s *Store) Heartbeat(ctx context.Context, hb *fleet.Heartbeat) (fleet.State, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	id, ttl := hb.ID, s.opts.WorkerTTL
	now := hb.ReceivedAt.UnixMilli()
	meta := []any{"pool", hb.Pool}
	if hb.Host != "" {
		meta = append(meta, "host", hb.Host)
	}
	if hb.PID != 0 {
		meta = append(meta, "pid", hb.PID)
	}
	if hb.Version != "" {
		meta = append(meta, "version", hb.Version)
	}
	if !hb.StartedAt.IsZero() {
		meta = append(meta, "started_at", hb.StartedAt.UTC().Format(time.RFC3339Nano))
	}
	if !hb.SentAt.IsZero() {
		meta = append(meta, "skew_ms", hb.SentAt.Sub(hb.ReceivedAt).Milliseconds())
	}
	metrics := make([]any, 0, 2*len(hb.Metrics))
	for k, v := range hb.Metrics {
		metrics = append(metrics, k, strconv.FormatFloat(v, 'f', -1, 64))
	}

	var desired *goredis.StringCmd
	write := func(p goredis.Pipeliner) error {
		p.Set(ctx, statusKey(id), string(hb.Status), ttl)
		p.Set(ctx, heartbeatKey(id), now, ttl)
		s.replaceHash(ctx, p, metaKey(id), meta, ttl)
		s.replaceHash(ctx, p, metricsKey(id), metrics, ttl)
		p.Expire(ctx, desiredKey(id), ttl)
		p.Expire(ctx, commandKey(id), ttl)
		p.Expire(ctx, workerAuditKey(id), ttl)
		p.ZAdd(ctx, activeKey, goredis.Z{Score: float64(now), Member: id})
		p.SAdd(ctx, poolsKey, hb.Pool)
		p.HSet(ctx, indexKey, id, hb.Pool+" "+string(hb.Status)+" "+hb.Host)
		s.incrWithExpiry(ctx, p, heartbeatsPerMinuteKey(now/60_000), 5*time.Minute)
		// No announcement: the event hub reads the index every tick and
		// sees the new heartbeat time, which keeps PUBLISH off this path.
		desired = p.Get(ctx, desiredKey(id))
		return nil
	}
	var err error
	if s.cluster {
		// Each command (and each script) is atomic on its own key, and
		// go-redis sends the pipeline to the owning nodes in parallel.
		_, err = s.rdb.Pipelined(ctx, write)
	} else {
		_, err = s.rdb.TxPipelined(ctx, write)
	}
	if err != nil && !errors.Is(err, goredis.Nil) {
		return "", wrap("heartbeat pipeline", err)
	}
	return parseDesired(desired.Val()), nil
}

// replaceHashScript replaces a hash and sets its expiry in one step, for
// Redis Cluster, where the heartbeat is not one transaction.
//
//	KEYS[1] the hash
//	ARGV[1] the expiry in milliseconds
//	ARGV[2..] field, value, field, value, ...
const replaceHashScript = `
redis.call('DEL', KEYS[1])
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
`

// incrWithExpiryScript increments a counter and sets its expiry in one step.
//
//	KEYS[1] the counter
//	ARGV[1] the expiry in milliseconds
const incrWithExpiryScript = `
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
`

// replaceHash queues the replacement of a hash by fields with an expiry, so
// that no crash can leave the hash without one.
func (s *Store) replaceHash(ctx context.Context, p goredis.Pipeliner, key string, fields []any, ttl time.Duration) {
	if s.cluster {
		args := append([]any{ttl.Milliseconds()}, fields...)
		p.Eval(ctx, replaceHashScript, []string{key}, args...)
		return
	}
	p.Del(ctx, key)
	if len(fields) > 0 {
		p.HSet(ctx, key, fields...)
		p.Expire(ctx, key, ttl)
	}
}

func (s *Store) incrWithExpiry(ctx context.Context, p goredis.Pipeliner, key string, ttl time.Duration) {
	if s.cluster {
		p.Eval(ctx, incrWithExpiryScript, []string{key}, ttl.Milliseconds())
		return
	}
	p.Incr(ctx, key)
	p.Expire(ctx, key, ttl)
}

func parseDesired(v string) fleet.State {
	st, err := fleet.ParseState(v, "desired_state")
	if err != nil {
		return fleet.DefaultDesiredState
	}
	return st
}

// Worker returns one worker, or ENOTFOUND when Redis has nothing of it.
func (s *Store) Worker(ctx context.Context, id string) (*fleet.Worker, error) {
	ws, err := s.Workers(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	if len(ws) == 0 {
		return nil, fleet.Errorf(fleet.ENOTFOUND, "id", "worker %q not found", id)
	}
	return ws[0], nil
}

// workersChunk is how many workers one pipeline reads, so that reading a
// whole fleet is several round trips, each within the call timeout.
const workersChunk = 500

// Workers returns the workers with the given ids, in the same order, leaving
// out ids of which Redis has nothing. Up to 500 ids cost one round trip.
func (s *Store) Workers(ctx context.Context, ids []string) ([]*fleet.Worker, error) {
	out := make([]*fleet.Worker, 0, len(ids))
	for start := 0; start < len(ids); start += workersChunk {
		chunk, err := s.workers(ctx, ids[start:min(start+workersChunk, len(ids))])
		if err != nil {
			return nil, err
		}
		out = append(out, chunk...)
	}
	return out, nil
}

func (s *Store) workers(ctx context.Context, ids []string) ([]*fleet.Worker, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	type reads struct {
		status, heartbeat, desired *goredis.StringCmd
		meta, metrics, command     *goredis.MapStringStringCmd
		score                      *goredis.FloatCmd
	}
	rs := make([]reads, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, id := range ids {
			rs[i] = reads{
				status:    p.Get(ctx, statusKey(id)),
				heartbeat: p.Get(ctx, heartbeatKey(id)),
				desired:   p.Get(ctx, desiredKey(id)),
				meta:      p.HGetAll(ctx, metaKey(id)),
				metrics:   p.HGetAll(ctx, metricsKey(id)),
				command:   p.HGetAll(ctx, commandKey(id)),
				score:     p.ZScore(ctx, activeKey, id),
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, wrap("read workers", err)
	}

	out := make([]*fleet.Worker, 0, len(ids))
	for i, id := range ids {
		r := rs[i]
		if r.status.Err() != nil && r.heartbeat.Err() != nil && r.score.Err() != nil {
			continue // nothing of this worker is left
		}
		w := &fleet.Worker{ID: id, Status: fleet.State(r.status.Val()), Desired: parseDesired(r.desired.Val())}
		// Liveness comes from the heartbeat time, never from whether a key
		// exists: the key first, the active set's score when the key is gone.
		if ms, err := strconv.ParseInt(r.heartbeat.Val(), 10, 64); err == nil {
			w.LastHeartbeat = time.UnixMilli(ms).UTC()
		} else if r.score.Err() == nil {
			w.LastHeartbeat = time.UnixMilli(int64(r.score.Val())).UTC()
		}
		meta := r.meta.Val()
		w.Pool, w.Host, w.Version = meta["pool"], meta["host"], meta["version"]
		w.PID, _ = strconv.ParseInt(meta["pid"], 10, 64)
		if t, err := time.Parse(time.RFC3339Nano, meta["started_at"]); err == nil {
			w.StartedAt = t
		}
		if ms, err := strconv.ParseInt(meta["skew_ms"], 10, 64); err == nil {
			w.ClockSkew = time.Duration(ms) * time.Millisecond
		}
		w.Metrics = make(map[string]float64, len(r.metrics.Val()))
		for k, v := range r.metrics.Val() {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				w.Metrics[k] = f
			}
		}
		w.LastCommand = decodeCommand(r.command.Val())
		out = append(out, w)
	}
	return out, nil
}

// Index returns one entry per worker in the active set: its pool, last
// status and last heartbeat. Workers written by other tools without an index
// entry are read from their own keys.
func (s *Store) Index(ctx context.Context) ([]fleet.PoolEntry, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	var active *goredis.ZSliceCmd
	var index *goredis.MapStringStringCmd
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		active = p.ZRangeWithScores(ctx, activeKey, 0, -1)
		index = p.HGetAll(ctx, indexKey)
		return nil
	})
	if err != nil {
		return nil, wrap("read index", err)
	}

	idx := index.Val()
	entries := make([]fleet.PoolEntry, 0, len(active.Val()))
	var missing []int
	for _, z := range active.Val() {
		id, _ := z.Member.(string)
		e := fleet.PoolEntry{ID: id, LastHeartbeat: time.UnixMilli(int64(z.Score)).UTC()}
		if v, ok := idx[id]; ok {
			pool, rest, _ := strings.Cut(v, " ")
			status, host, _ := strings.Cut(rest, " ")
			e.Pool, e.Status, e.Host = pool, fleet.State(status), host
		} else {
			missing = append(missing, len(entries))
		}
		entries = append(entries, e)
	}
	if len(missing) > 0 {
		if err := s.fillMissing(ctx, entries, missing); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

func (s *Store) fillMissing(ctx context.Context, entries []fleet.PoolEntry, missing []int) error {
	statuses := make([]*goredis.StringCmd, len(missing))
	pools := make([]*goredis.StringCmd, len(missing))
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, at := range missing {
			statuses[i] = p.Get(ctx, statusKey(entries[at].ID))
			pools[i] = p.HGet(ctx, metaKey(entries[at].ID), "pool")
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return wrap("read unindexed workers", err)
	}
	for i, at := range missing {
		entries[at].Status = fleet.State(statuses[i].Val())
		entries[at].Pool = pools[i].Val()
	}
	return nil
}

// PoolState returns the known pool names and the desired counts of the pools
// that were scaled.
func (s *Store) PoolState(ctx context.Context) ([]string, map[string]int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	names, err := s.rdb.SMembers(ctx, poolsKey).Result()
	if err != nil {
		return nil, nil, wrap("read pools", err)
	}
	counts := make([]*goredis.StringCmd, len(names))
	_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, name := range names {
			counts[i] = p.Get(ctx, poolDesiredKey(name))
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, nil, wrap("read desired counts", err)
	}
	desired := make(map[string]int)
	for i, name := range names {
		if n, err := strconv.Atoi(counts[i].Val()); err == nil {
			desired[name] = n
		}
	}
	return names, desired, nil
}

// Scale sets a pool's desired count and returns the previous one (-1 when
// the pool had none). The pool becomes known.
func (s *Store) Scale(ctx context.Context, pool string, n int) (int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	var prev *goredis.StatusCmd
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		prev = p.SetArgs(ctx, poolDesiredKey(pool), n, goredis.SetArgs{Get: true})
		p.SAdd(ctx, poolsKey, pool)
		p.Publish(ctx, s.channel, "pool:"+pool)
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return 0, wrap("scale pool", err)
	}
	old, err := strconv.Atoi(prev.Val())
	if err != nil {
		old = -1
	}
	return old, nil
}

// setDesiredScript changes a worker's desired state only if it is still the
// one the caller saw, so two operators cannot overwrite each other blindly.
//
//	KEYS[1] worker:{id}:desired_state
//	ARGV[1] the expected current state; "running" also matches a missing key
//	ARGV[2] the new state
//	ARGV[3] the key's expiry in milliseconds
//
// It returns "OK", or the current state when it differs from ARGV[1].
var setDesiredScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then cur = 'running' end
if cur ~= ARGV[1] then return cur end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 'OK'
`)

// SetDesired applies cmd to a worker: it moves the desired state from
// cmd.From to cmd.To and records cmd as the worker's last command. It
// returns ECONFLICT when the desired state changed since the caller read it.
func (s *Store) SetDesired(ctx context.Context, id string, cmd fleet.Command) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	ttl := s.opts.WorkerTTL
	res, err := setDesiredScript.Run(ctx, s.rdb, []string{desiredKey(id)}, string(cmd.From), string(cmd.To), ttl.Milliseconds()).Text()
	if err != nil {
		return wrap("set desired state", err)
	}
	if res != "OK" {
		return fleet.Errorf(fleet.ECONFLICT, "action", "the desired state changed to %s meanwhile; reload and try again", res)
	}
	_, err = s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.Del(ctx, commandKey(id))
		p.HSet(ctx, commandKey(id), encodeCommand(cmd)...)
		p.PExpire(ctx, commandKey(id), ttl)
		p.Publish(ctx, s.channel, "worker:"+id)
		return nil
	})
	if err != nil {
		return wrap("record command", err)
	}
	return nil
}

func encodeCommand(c fleet.Command) []any {
	return []any{
		"action", string(c.Action), "from", string(c.From), "to", string(c.To),
		"actor", c.Actor, "source", c.Source, "reason", c.Reason,
		"at_ms", c.At.UnixMilli(),
	}
}

func decodeCommand(m map[string]string) *fleet.Command {
	if len(m) == 0 {
		return nil
	}
	ms, _ := strconv.ParseInt(m["at_ms"], 10, 64)
	return &fleet.Command{
		Action: fleet.Action(m["action"]), From: fleet.State(m["from"]), To: fleet.State(m["to"]),
		Actor: m["actor"], Source: m["source"], Reason: m["reason"],
		At: time.UnixMilli(ms).UTC(),
	}
}

// RemoveWorkers deletes workers from the active set, the index and all their
// keys, for workers silent beyond the retention period.
func (s *Store) RemoveWorkers(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()

	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, id := range ids {
			p.ZRem(ctx, activeKey, id)
			p.HDel(ctx, indexKey, id)
			for _, k := range []string{statusKey(id), heartbeatKey(id), desiredKey(id), metaKey(id), metricsKey(id), commandKey(id), workerAuditKey(id)} {
				p.Del(ctx, k)
			}
			p.Publish(ctx, s.channel, "worker:"+id)
		}
		return nil
	})
	if err != nil {
		return wrap("remove workers", err)
	}
	return nil
}

// SilentSince returns the ids of workers whose last heartbeat is before t.
func (s *Store) SilentSince(ctx context.Context, t time.Time) ([]string, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ids, err := s.rdb.ZRangeByScore(ctx, activeKey, &goredis.ZRangeBy{Min: "-inf", Max: "(" + strconv.FormatInt(t.UnixMilli(), 10)}).Result()
	if err != nil {
		return nil, wrap("read silent workers", err)
	}
	return ids, nil
}

// wrap marks err as the state store being unavailable when it is a
// connection or timeout failure, so callers respond with 503; other Redis errors
// stay internal.
func wrap(step string, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", step, err)
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %v", step, fleet.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", step, err)
}

func isUnavailable(err error) bool {
	var redisErr goredis.Error
	if errors.As(err, &redisErr) {
		msg := redisErr.Error()
		for _, prefix := range []string{"LOADING", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "MOVED", "ASK"} {
			if strings.HasPrefix(msg, prefix) {
				return true
			}
		}
		return false
	}
	// Timeouts, refused connections, pool exhaustion and closed
	// connections: everything that is not a Redis reply.
	return true
}

// Stats returns the heartbeats received in the last full minute before now
// and the fleet rates, which are zero before the sampler's first run.
func (s *Store) Stats(ctx context.Context, now time.Time) (int64, fleet.FleetRates, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()

	var count *goredis.StringCmd
	var rates *goredis.MapStringStringCmd
	_, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		count = p.Get(ctx, heartbeatsPerMinuteKey(now.UnixMilli()/60_000-1))
		rates = p.HGetAll(ctx, fleetRatesKey)
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return 0, fleet.FleetRates{}, wrap("read stats", err)
	}
	n, _ := strconv.ParseInt(count.Val(), 10, 64)
	m := rates.Val()
	var r fleet.FleetRates
	r.Processed, _ = strconv.ParseFloat(m["processed"], 64)
	r.Failed, _ = strconv.ParseFloat(m["failed"], 64)
	if ms, err := strconv.ParseInt(m["window_ms"], 10, 64); err == nil {
		r.Window = time.Duration(ms) * time.Millisecond
	}
	if ms, err := strconv.ParseInt(m["at_ms"], 10, 64); err == nil {
		r.At = time.UnixMilli(ms).UTC()
	}
	return n, r, nil
}

// SetFleetRates stores the fleet's job counts over the last window.
func (s *Store) SetFleetRates(ctx context.Context, r fleet.FleetRates) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	err := s.rdb.HSet(ctx, fleetRatesKey,
		"processed", strconv.FormatFloat(r.Processed, 'f', -1, 64),
		"failed", strconv.FormatFloat(r.Failed, 'f', -1, 64),
		"window_ms", r.Window.Milliseconds(),
		"at_ms", r.At.UnixMilli(),
	).Err()
	if err != nil {
		return wrap("write fleet rates", err)
	}
	return nil
}
