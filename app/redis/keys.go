package redis

import "strconv"

// Key names. Other tools read the fixed ones, so they never change. The Redis
// type of each key is given beside it; README.md has the same table.

// Fixed per-worker keys. Each expires after the worker retention period and
// every heartbeat refreshes every one of them in the same transaction.
func statusKey(id string) string        { return "worker:" + id + ":status" }        // string: last reported status
func heartbeatKey(id string) string     { return "worker:" + id + ":heartbeat" }     // string: server receive time, Unix ms
func desiredKey(id string) string       { return "worker:" + id + ":desired_state" } // string: running|paused|draining|stopped; absent = running
func metaKey(id string) string          { return "worker:" + id + ":meta" }          // hash: pool, host, pid, version, started_at, skew_ms
func metricsKey(id string) string       { return "worker:" + id + ":metrics" }       // hash: metric name -> number
func commandKey(id string) string       { return "worker:" + id + ":command" }       // hash: the last command (action, from, to, actor, source, reason, at_ms)
func workerAuditKey(id string) string   { return "worker:" + id + ":audit" }         // list: JSON audit entries, newest first, capped
func poolDesiredKey(pool string) string { return "pool:" + pool + ":desired_count" } // string: integer, no expiry

// Fixed fleet-wide keys.
const (
	activeKey = "workers:active" // sorted set: worker id scored by last heartbeat, Unix ms
	poolsKey  = "pools:known"    // set: pool names
)

// Keys of this service's own.
const (
	// indexKey maps each worker to its pool, status and host, so listing,
	// searching and counting read two keys instead of every worker's.
	indexKey = "workers:index" // hash: worker id -> "<pool> <status> <host>"
	auditKey = "audit:log"     // list: JSON audit entries, newest first, capped
	// fleetRatesKey holds the fleet's job counts over the last sampling
	// window, written by the scheduler's sampler.
	fleetRatesKey = "stats:fleet_rates" // hash: processed, failed, window_ms, at_ms
	// EventsChannel is the pub/sub channel on which every replica announces
	// changes; each message is "worker:<id>", "pool:<name>" or a topic name.
	// Pub/sub ignores the database number, so stores on other databases
	// than 0 use EventsChannel + ":<db>" (see Store.Channel).
	EventsChannel = "controlplane:events"
)

// heartbeatsPerMinuteKey counts heartbeats received in one minute.
func heartbeatsPerMinuteKey(minute int64) string { // string: counter, expires after 5 minutes
	return "stats:heartbeats:" + strconv.FormatInt(minute, 10)
}
