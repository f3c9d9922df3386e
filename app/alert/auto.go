package alert

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// autoActions pauses workers whose error-rate alert fires and drains the
// surplus of pools above their desired size, at most MaxAutoActions
// commands per check so that a bad reading cannot stop a whole fleet.
func (e *Engine) autoActions(ctx context.Context, states map[string]fleet.AlertState, workers []*fleet.Worker, pools []*fleet.Pool, rates map[string]fleet.WorkerRate, now time.Time, s fleet.Settings) {
	budget := e.opts.MaxAutoActions
	byID := make(map[string]*fleet.Worker, len(workers))
	for _, w := range workers {
		byID[w.ID] = w
	}

	fps := make([]string, 0, len(states))
	for fp := range states {
		fps = append(fps, fp)
	}
	sort.Strings(fps)
	for _, fp := range fps {
		st := states[fp]
		if budget == 0 {
			break
		}
		a := st.Alert
		w := byID[a.WorkerID]
		if !st.Firing() || a.Rule != fleet.RuleErrorRate || a.Silenced || w == nil || w.Desired != fleet.StateRunning {
			continue
		}
		r := rates[w.ID]
		reason := fmt.Sprintf("error rate %.1f%% over the last %s (%.0f of %.0f jobs) is above the threshold of %.1f%%",
			a.Value, r.Window.Round(time.Second), r.Failed, r.Processed, s.ErrorRateThreshold)
		if e.command(ctx, w.ID, fleet.ActionPause, reason) {
			budget--
		}
	}

	for _, p := range pools {
		if !p.HasDesired || budget == 0 {
			continue
		}
		// Workers already told to drain or stop still report running until
		// their next heartbeat; they are leaving, so they are not surplus.
		staying := serving(p.Name, workers)
		surplus := len(staying) - p.DesiredCount
		if surplus <= 0 {
			continue
		}
		for _, w := range drainChoice(staying, surplus) {
			if budget == 0 {
				break
			}
			reason := fmt.Sprintf("pool %s has %d serving workers and wants %d: draining %s because it is %s",
				p.Name, len(staying), p.DesiredCount, w.ID, whyChosen(w))
			if e.command(ctx, w.ID, fleet.ActionDrain, reason) {
				budget--
			}
		}
	}
	if budget == 0 {
		e.log.Warn("automatic actions reached their cap for this check", "cap", e.opts.MaxAutoActions)
	}
}

func (e *Engine) command(ctx context.Context, id string, action fleet.Action, reason string) bool {
	_, err := e.svc.Command(ctx, id, action, "auto", fleet.SourceAuto, reason)
	if err != nil {
		if fleet.ErrorCode(err) != fleet.ECONFLICT {
			e.log.Warn("automatic action failed", "worker", id, "action", action, "err", err)
		}
		return false
	}
	e.log.Info("automatic action", "worker", id, "action", action, "reason", reason)
	return true
}

// serving returns the live workers of a pool that run or are paused and
// were not told to drain or stop.
func serving(pool string, workers []*fleet.Worker) []*fleet.Worker {
	var out []*fleet.Worker
	for _, w := range workers {
		if w.Pool != pool || w.Stale {
			continue
		}
		if (w.Status == fleet.StateRunning || w.Status == fleet.StatePaused) &&
			(w.Desired == fleet.StateRunning || w.Desired == fleet.StatePaused) {
			out = append(out, w)
		}
	}
	return out
}

// drainChoice picks n of the serving workers to drain: paused ones first
// (they do no work), then idle ones, then the most recently started, so the
// least work is interrupted.
func drainChoice(serving []*fleet.Worker, n int) []*fleet.Worker {
	serving = append([]*fleet.Worker(nil), serving...)
	sort.SliceStable(serving, func(i, j int) bool {
		a, b := serving[i], serving[j]
		if pa, pb := a.Status == fleet.StatePaused, b.Status == fleet.StatePaused; pa != pb {
			return pa
		}
		if ia, ib := a.Metrics[fleet.MetricBusy] == 0, b.Metrics[fleet.MetricBusy] == 0; ia != ib {
			return ia
		}
		if !a.StartedAt.Equal(b.StartedAt) {
			return a.StartedAt.After(b.StartedAt)
		}
		return a.ID > b.ID
	})
	if len(serving) > n {
		serving = serving[:n]
	}
	return serving
}

func whyChosen(w *fleet.Worker) string {
	switch {
	case w.Status == fleet.StatePaused:
		return "paused"
	case w.Metrics[fleet.MetricBusy] == 0:
		return "idle"
	}
	return "the most recently started"
}
