package service

import (
	"context"
	"sort"
	"strconv"
	"strings"

	"github.com/verifier/controlplane/app/fleet"
)

// Paging limits of worker lists.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// WorkerFilter selects and orders a page of workers.
type WorkerFilter struct {
	Pool string
	// Status matches the status shown to operators: a reported state, or
	// "offline" for a stale worker.
	Status string
	// Stale, when set, keeps only stale (true) or live (false) workers.
	Stale *bool
	// Query matches a substring of the id or the host.
	Query  string
	Sort   string // one of SortFields, "-" in front for descending
	Limit  int
	Offset int
}

// SortFields lists the accepted sort keys.
var SortFields = []string{"id", "pool", "status", "heartbeat", "host"}

// Validate checks the filter and fills defaults.
func (f *WorkerFilter) Validate() error {
	if f.Pool != "" {
		if err := fleet.ValidateName("pool", f.Pool); err != nil {
			return err
		}
	}
	switch f.Status {
	case "", "offline", "running", "paused", "draining", "stopped":
	default:
		return fleet.Errorf(fleet.EINVALID, "status", "status must be one of running, paused, draining, stopped, offline")
	}
	if len(f.Query) > fleet.MaxHostLength {
		return fleet.Errorf(fleet.EINVALID, "q", "q must be at most %d bytes", fleet.MaxHostLength)
	}
	key := strings.TrimPrefix(f.Sort, "-")
	if key == "" {
		f.Sort = "id"
	} else if !contains(SortFields, key) {
		return fleet.Errorf(fleet.EINVALID, "sort", "sort must be one of %s, with an optional leading -", strings.Join(SortFields, ", "))
	}
	if f.Limit == 0 {
		f.Limit = DefaultLimit
	}
	if f.Limit < 1 || f.Limit > MaxLimit {
		return fleet.Errorf(fleet.EINVALID, "limit", "limit must be a whole number from 1 to %d", MaxLimit)
	}
	if f.Offset < 0 {
		return fleet.Errorf(fleet.EINVALID, "offset", "offset must be a whole number >= 0")
	}
	return nil
}

// WorkerPage is one page of a worker list.
type WorkerPage struct {
	Workers []*fleet.Worker
	// Total counts every worker that matched the filter.
	Total  int
	Limit  int
	Offset int
}

// ListWorkers returns the page of workers that f selects, in a stable order:
// the sort key, then the id.
func (s *Service) ListWorkers(ctx context.Context, f WorkerFilter) (WorkerPage, error) {
	if err := f.Validate(); err != nil {
		return WorkerPage{}, err
	}
	entries, err := s.store.Index(ctx)
	if err != nil {
		return WorkerPage{}, err
	}
	ids, total := s.SelectPage(entries, f)
	workers, err := s.WorkersByID(ctx, ids)
	if err != nil {
		return WorkerPage{}, err
	}
	return WorkerPage{Workers: workers, Total: total, Limit: f.Limit, Offset: f.Offset}, nil
}

// Index returns the index entry of every active worker. Callers that build
// several views from one reading, such as the event hub, pass the entries to
// SelectPage and PoolsFrom.
func (s *Service) Index(ctx context.Context) ([]fleet.PoolEntry, error) {
	return s.store.Index(ctx)
}

// SelectPage filters, sorts and pages index entries with a validated f and
// returns the ids on the page and the number of matches. entries is not
// modified.
func (s *Service) SelectPage(entries []fleet.PoolEntry, f WorkerFilter) (ids []string, total int) {
	now, grace := s.now(), s.Grace()
	query := strings.ToLower(f.Query)
	matched := make([]fleet.PoolEntry, 0, len(entries))
	for _, e := range entries {
		stale := fleet.IsStale(e.LastHeartbeat, now, grace)
		switch {
		case f.Pool != "" && e.Pool != f.Pool,
			f.Stale != nil && *f.Stale != stale,
			f.Status == "offline" && !stale,
			f.Status != "" && f.Status != "offline" && (stale || string(e.Status) != f.Status),
			query != "" && !strings.Contains(strings.ToLower(e.ID), query) && !strings.Contains(strings.ToLower(e.Host), query):
			continue
		}
		matched = append(matched, e)
	}
	sortEntries(matched, f.Sort)

	if f.Offset >= len(matched) {
		return []string{}, len(matched)
	}
	end := min(f.Offset+f.Limit, len(matched))
	ids = make([]string, 0, end-f.Offset)
	for _, e := range matched[f.Offset:end] {
		ids = append(ids, e.ID)
	}
	return ids, len(matched)
}

// WorkersByID returns the workers with the given ids, in order, with their
// derived fields; ids of which nothing is stored are left out.
func (s *Service) WorkersByID(ctx context.Context, ids []string) ([]*fleet.Worker, error) {
	if len(ids) == 0 {
		return []*fleet.Worker{}, nil
	}
	workers, err := s.store.Workers(ctx, ids)
	if err != nil {
		return nil, err
	}
	now, grace := s.now(), s.Grace()
	for _, w := range workers {
		w.Derive(now, grace)
	}
	return workers, nil
}

func sortEntries(entries []fleet.PoolEntry, by string) {
	desc := strings.HasPrefix(by, "-")
	key := strings.TrimPrefix(by, "-")
	less := func(a, b fleet.PoolEntry) int {
		switch key {
		case "pool":
			return strings.Compare(a.Pool, b.Pool)
		case "status":
			return strings.Compare(string(a.Status), string(b.Status))
		case "host":
			return strings.Compare(a.Host, b.Host)
		case "heartbeat":
			return a.LastHeartbeat.Compare(b.LastHeartbeat)
		}
		return 0
	}
	sort.SliceStable(entries, func(i, j int) bool {
		c := less(entries[i], entries[j])
		if desc {
			c = -c
		}
		if c != 0 {
			return c < 0
		}
		if desc && key == "id" {
			return entries[i].ID > entries[j].ID
		}
		return entries[i].ID < entries[j].ID
	})
}

// Command applies action to one worker on behalf of actor and returns the
// worker as it is now. It returns ENOTFOUND for an unknown worker and
// ECONFLICT, with the reason, for a command that makes no sense in the
// worker's state.
func (s *Service) Command(ctx context.Context, id string, action fleet.Action, actor, source, reason string) (*fleet.Worker, error) {
	if err := fleet.ValidateName("id", id); err != nil {
		return nil, err
	}
	w, err := s.Worker(ctx, id)
	if err != nil {
		return nil, err
	}
	to, err := fleet.Transition(action, w.Desired, w.Status)
	if err != nil {
		return nil, err
	}
	cmd := fleet.Command{Action: action, From: w.Desired, To: to, Actor: actor, Source: source, Reason: reason, At: s.now().UTC()}
	if err := s.store.SetDesired(ctx, id, cmd); err != nil {
		return nil, err
	}
	s.observer.CommandIssued(action, source)
	s.audit(ctx, fleet.AuditEntry{
		At: cmd.At, Actor: actor, Source: source, Kind: fleet.AuditCommand, Action: string(action),
		WorkerID: id, Pool: w.Pool, Before: string(cmd.From), After: string(to), Reason: reason,
	})
	w.Desired, w.LastCommand = to, &cmd
	return w, nil
}

// PoolCommandResult lists the workers that a pool-wide command changed.
type PoolCommandResult struct {
	Pool    string
	Action  fleet.Action
	Changed []string
	// Skipped counts workers for which the command made no sense, such as
	// pausing one that is already paused.
	Skipped int
}

// PoolCommand applies action to every live worker of a pool.
func (s *Service) PoolCommand(ctx context.Context, pool string, action fleet.Action, actor, source string) (PoolCommandResult, error) {
	if err := fleet.ValidateName("pool", pool); err != nil {
		return PoolCommandResult{}, err
	}
	// One index reading fixes the set of workers, so a worker that turns
	// stale meanwhile cannot shift a page and hide another.
	entries, err := s.store.Index(ctx)
	if err != nil {
		return PoolCommandResult{}, err
	}
	live := false
	ids, total := s.SelectPage(entries, WorkerFilter{Pool: pool, Stale: &live, Sort: "id", Limit: len(entries) + 1})
	if total == 0 {
		return PoolCommandResult{}, fleet.Errorf(fleet.ENOTFOUND, "pool", "pool %q has no live workers", pool)
	}
	res := PoolCommandResult{Pool: pool, Action: action, Changed: []string{}}
	for _, id := range ids {
		if _, err := s.Command(ctx, id, action, actor, source, "pool "+string(action)); err != nil {
			if code := fleet.ErrorCode(err); code == fleet.ECONFLICT || code == fleet.ENOTFOUND {
				res.Skipped++
				continue
			}
			return res, err
		}
		res.Changed = append(res.Changed, id)
	}
	return res, nil
}

// Pools returns every known pool, sorted by name.
func (s *Service) Pools(ctx context.Context) ([]*fleet.Pool, error) {
	entries, err := s.store.Index(ctx)
	if err != nil {
		return nil, err
	}
	return s.PoolsFrom(ctx, entries)
}

// PoolsFrom returns every known pool counted from index entries.
func (s *Service) PoolsFrom(ctx context.Context, entries []fleet.PoolEntry) ([]*fleet.Pool, error) {
	known, desired, err := s.store.PoolState(ctx)
	if err != nil {
		return nil, err
	}
	byName := fleet.CountPools(entries, desired, known, s.now(), s.Grace())
	pools := make([]*fleet.Pool, 0, len(byName))
	for _, p := range byName {
		pools = append(pools, p)
	}
	sort.Slice(pools, func(i, j int) bool { return pools[i].Name < pools[j].Name })
	return pools, nil
}

// FleetSummary is the overview's headline numbers.
type FleetSummary struct {
	Live                int
	ByStatus            map[fleet.State]int
	Stale               int
	Pools               int
	HeartbeatsPerMinute int64
	Rates               fleet.FleetRates
}

// Summary totals pools and reads the heartbeat and job rates.
func (s *Service) Summary(ctx context.Context, pools []*fleet.Pool) (FleetSummary, error) {
	sum := FleetSummary{ByStatus: map[fleet.State]int{}, Pools: len(pools)}
	for _, p := range pools {
		for st, n := range p.ByStatus {
			sum.ByStatus[st] += n
			sum.Live += n
		}
		sum.Stale += p.Stale
	}
	var err error
	sum.HeartbeatsPerMinute, sum.Rates, err = s.store.Stats(ctx, s.now())
	return sum, err
}

// Pool returns one pool, or ENOTFOUND.
func (s *Service) Pool(ctx context.Context, name string) (*fleet.Pool, error) {
	if err := fleet.ValidateName("pool", name); err != nil {
		return nil, err
	}
	pools, err := s.Pools(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range pools {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fleet.Errorf(fleet.ENOTFOUND, "pool", "pool %q not found", name)
}

// Scale sets a pool's desired count, from 0 to the configured maximum, and
// returns the pool as it is now.
func (s *Service) Scale(ctx context.Context, pool string, n int64, actor, source string) (*fleet.Pool, error) {
	if err := fleet.ValidateName("pool", pool); err != nil {
		return nil, err
	}
	if err := fleet.ValidateDesiredCount(n, s.opts.MaxDesiredCount); err != nil {
		return nil, err
	}
	prev, err := s.store.Scale(ctx, pool, int(n))
	if err != nil {
		return nil, err
	}
	before := ""
	if prev >= 0 {
		before = strconv.Itoa(prev)
	}
	s.audit(ctx, fleet.AuditEntry{
		At: s.now().UTC(), Actor: actor, Source: source, Kind: fleet.AuditScale, Action: "scale",
		Pool: pool, Before: before, After: strconv.FormatInt(n, 10),
	})
	return s.Pool(ctx, pool)
}

// MaxDesiredCount returns the largest accepted pool size.
func (s *Service) MaxDesiredCount() int { return s.opts.MaxDesiredCount }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
