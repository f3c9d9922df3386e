package mysql

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/verifier/controlplane/app/fleet"
)

func auditEntry(workerID, pool, actor, kind string) fleet.AuditEntry {
	return fleet.AuditEntry{
		At:       time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		Actor:    actor,
		Source:   "ui",
		Kind:     kind,
		Action:   "pause",
		WorkerID: workerID,
		Pool:     pool,
		Before:   "running",
		After:    "paused",
		Reason:   "maintenance",
	}
}

func TestAppendAuditRoundTrip(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	e := fleet.AuditEntry{
		At:       time.Date(2026, 5, 1, 12, 0, 0, 123_000_000, time.FixedZone("UTC+2", 2*3600)),
		Actor:    "alice",
		Source:   "ui",
		Kind:     fleet.AuditScale,
		Action:   "scale",
		WorkerID: "",
		Pool:     "billing",
		Before:   "3",
		After:    "5",
		Reason:   "Black Friday <script>'\"",
	}
	if err := d.AppendAudit(ctx, e); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}

	records, err := d.ListAudit(ctx, AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(records) != 1 {
		t.Fatalf("ListAudit returned %d records, want 1", len(records))
	}
	got := records[0]
	if got.ID <= 0 {
		t.Errorf("record id = %d, want > 0", got.ID)
	}
	if !got.At.Equal(e.At) {
		t.Errorf("At = %v, want %v", got.At, e.At)
	}
	got.At, e.At = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got.AuditEntry, e) {
		t.Errorf("entry:\n got %+v\nwant %+v", got.AuditEntry, e)
	}
}

func TestAppendAuditZeroTimeUsesNow(t *testing.T) {
	d := openTestDB(t)
	now := time.Date(2026, 5, 1, 12, 30, 0, 0, time.UTC)
	d.now = func() time.Time { return now }

	e := auditEntry("w-01", "billing", "alice", fleet.AuditCommand)
	e.At = time.Time{}
	if err := d.AppendAudit(context.Background(), e); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	records, err := d.ListAudit(context.Background(), AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(records) != 1 || !records[0].At.Equal(now) {
		t.Errorf("records = %+v, want one at %v", records, now)
	}
}

func TestAppendAuditClipsLongValues(t *testing.T) {
	d := openTestDB(t)
	e := auditEntry("w-01", "billing", strings.Repeat("ä", 200), fleet.AuditSettings) // 400 bytes
	e.Reason = "bad \xff byte"
	e.After = strings.Repeat("x", 70000)
	if err := d.AppendAudit(context.Background(), e); err != nil {
		t.Fatalf("AppendAudit with long values: %v", err)
	}

	records, err := d.ListAudit(context.Background(), AuditFilter{})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(records) != 1 {
		t.Fatalf("ListAudit returned %d records, want 1", len(records))
	}
	r := records[0]
	if r.Actor != strings.Repeat("ä", 127) {
		t.Errorf("actor has %d bytes, want 127 whole runes (254 bytes)", len(r.Actor))
	}
	if !utf8.ValidString(r.Reason) || r.Reason != "bad \uFFFD byte" {
		t.Errorf("reason = %q, want the invalid byte replaced by U+FFFD", r.Reason)
	}
	if len(r.After) != 65535 {
		t.Errorf("after has %d bytes, want 65535", len(r.After))
	}
}

// seedAudit appends entries whose fields cycle, one second apart, and
// returns them oldest first.
func seedAudit(t *testing.T, d *DB, n int) []fleet.AuditEntry {
	t.Helper()
	workers := []string{"w-01", "w-02", ""}
	pools := []string{"billing", "reports"}
	actors := []string{"alice", "bob", "auto"}
	kinds := []string{fleet.AuditCommand, fleet.AuditScale}
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	var entries []fleet.AuditEntry
	for i := range n {
		e := auditEntry(workers[i%3], pools[i%2], actors[i%3], kinds[i%2])
		e.At = base.Add(time.Duration(i) * time.Second)
		if err := d.AppendAudit(context.Background(), e); err != nil {
			t.Fatalf("AppendAudit %d: %v", i, err)
		}
		entries = append(entries, e)
	}
	return entries
}

func TestListAuditFilters(t *testing.T) {
	d := openTestDB(t)
	entries := seedAudit(t, d, 30)
	base := entries[0].At

	for _, c := range []struct {
		name   string
		filter AuditFilter
		match  func(i int, e fleet.AuditEntry) bool
	}{
		{"all", AuditFilter{}, func(int, fleet.AuditEntry) bool { return true }},
		{"worker", AuditFilter{WorkerID: "w-02"}, func(_ int, e fleet.AuditEntry) bool { return e.WorkerID == "w-02" }},
		{"pool", AuditFilter{Pool: "reports"}, func(_ int, e fleet.AuditEntry) bool { return e.Pool == "reports" }},
		{"actor", AuditFilter{Actor: "bob"}, func(_ int, e fleet.AuditEntry) bool { return e.Actor == "bob" }},
		{"actor is case-sensitive", AuditFilter{Actor: "Bob"}, func(int, fleet.AuditEntry) bool { return false }},
		{"kind", AuditFilter{Kind: fleet.AuditScale}, func(_ int, e fleet.AuditEntry) bool { return e.Kind == fleet.AuditScale }},
		{"since inclusive, until exclusive",
			AuditFilter{Since: base.Add(10 * time.Second), Until: base.Add(20 * time.Second)},
			func(i int, _ fleet.AuditEntry) bool { return i >= 10 && i < 20 }},
		{"since in another zone",
			AuditFilter{Since: base.Add(25 * time.Second).In(time.FixedZone("UTC-5", -5*3600))},
			func(i int, _ fleet.AuditEntry) bool { return i >= 25 }},
		{"combined", AuditFilter{Pool: "billing", Kind: fleet.AuditCommand, Actor: "alice"},
			func(_ int, e fleet.AuditEntry) bool {
				return e.Pool == "billing" && e.Kind == fleet.AuditCommand && e.Actor == "alice"
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			records, err := d.ListAudit(context.Background(), c.filter)
			if err != nil {
				t.Fatalf("ListAudit: %v", err)
			}
			var want []time.Time
			for i := len(entries) - 1; i >= 0; i-- {
				if c.match(i, entries[i]) {
					want = append(want, entries[i].At)
				}
			}
			var got []time.Time
			for _, r := range records {
				got = append(got, r.At)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ListAudit(%+v) times:\n got %v\nwant %v", c.filter, got, want)
			}
		})
	}
}

func TestListAuditPagination(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()
	seedAudit(t, d, 25)

	var pages [][]AuditRecord
	filter := AuditFilter{Limit: 10}
	for range 5 {
		page, err := d.ListAudit(ctx, filter)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", filter, err)
		}
		pages = append(pages, page)
		if len(page) == 0 {
			break
		}
		filter.BeforeID = page[len(page)-1].ID
	}

	var sizes []int
	for _, p := range pages {
		sizes = append(sizes, len(p))
	}
	if want := []int{10, 10, 5, 0}; !reflect.DeepEqual(sizes, want) {
		t.Fatalf("page sizes = %v, want %v", sizes, want)
	}

	var previous int64
	for _, p := range pages {
		for _, r := range p {
			if previous != 0 && r.ID >= previous {
				t.Errorf("id %d follows %d; want strictly decreasing ids across pages", r.ID, previous)
			}
			previous = r.ID
		}
	}

	// A new entry does not shift the pages already read.
	if err := d.AppendAudit(ctx, auditEntry("w-01", "billing", "alice", fleet.AuditCommand)); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	again, err := d.ListAudit(ctx, AuditFilter{Limit: 10, BeforeID: pages[0][9].ID})
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if !reflect.DeepEqual(again, pages[1]) {
		t.Errorf("second page changed after a new entry was appended")
	}
}

func TestListAuditLimits(t *testing.T) {
	d := openTestDB(t)
	ctx := context.Background()

	// Bulk insert, because AppendAudit one by one is slow for 500 rows.
	total := MaxAuditLimit + 10
	columns := []string{"at", "actor", "source", "kind", "action", "worker_id", "pool", "before_value", "after_value", "reason"}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	err = insertBatches(ctx, tx, "audit_log", columns, total, func(args []any, i int) []any {
		return append(args, time.Date(2026, 5, 1, 0, 0, i, 0, time.UTC), "alice", "ui", "command", "pause", "w-01", "billing", "", "", "")
	})
	if err != nil {
		t.Fatalf("bulk insert audit_log: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}

	for _, c := range []struct{ limit, want int }{
		{0, DefaultAuditLimit},
		{-1, DefaultAuditLimit},
		{7, 7},
		{MaxAuditLimit + 1000, MaxAuditLimit},
	} {
		records, err := d.ListAudit(ctx, AuditFilter{Limit: c.limit})
		if err != nil {
			t.Fatalf("ListAudit(Limit %d): %v", c.limit, err)
		}
		if len(records) != c.want {
			t.Errorf("ListAudit(Limit %d) returned %d records, want %d", c.limit, len(records), c.want)
		}
	}
}
