package alert

import (
	"context"
	"time"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/redis"
)

// sample measures each worker's jobs over a sliding window from its
// cumulative counters. Each worker keeps two samples in Redis: the rate is
// measured from the older one to now, and the pair moves on every half
// window, so the measured span stays between half a window and a window and
// a new replica taking over the checks continues where the last one was.
func (e *Engine) sample(ctx context.Context, workers []*fleet.Worker, now time.Time, window time.Duration) (map[string]fleet.WorkerRate, error) {
	prev, err := e.store.Samples(ctx)
	if err != nil {
		return nil, err
	}
	next := make(map[string][2]redis.CounterSample, len(workers))
	rates := make(map[string]fleet.WorkerRate, len(workers))
	var fleetRates fleet.FleetRates
	for _, w := range workers {
		if w.Stale {
			continue
		}
		cur := redis.CounterSample{At: now, Processed: w.Processed(), Failed: w.Failed()}
		pair, ok := prev[w.ID]
		if !ok || cur.Processed < pair[1].Processed {
			// First sight, or the counters went down: the worker restarted.
			pair = [2]redis.CounterSample{cur, cur}
		}
		r := fleet.WorkerRate{
			Processed: fleet.CounterDelta(pair[0].Processed, cur.Processed),
			Failed:    fleet.CounterDelta(pair[0].Failed, cur.Failed),
			Window:    now.Sub(pair[0].At),
		}
		rates[w.ID] = r
		fleetRates.Processed += r.Processed
		fleetRates.Failed += r.Failed
		fleetRates.Window = max(fleetRates.Window, r.Window)
		if now.Sub(pair[1].At) >= window/2 {
			pair = [2]redis.CounterSample{pair[1], cur}
		}
		next[w.ID] = pair
	}
	if err := e.store.SaveSamples(ctx, next); err != nil {
		return nil, err
	}
	fleetRates.At = now
	if err := e.store.SetFleetRates(ctx, fleetRates); err != nil {
		return nil, err
	}
	return rates, nil
}
