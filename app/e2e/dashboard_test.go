package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// desiredCell returns the selector of a worker row's desired-state cell.
func desiredCell(id string) string { return rowSelector(id) + " td:nth-of-type(4)" }

// poolColumns are the <td> cells of a pool row in order. The pool name is
// in the row's <th>.
var poolColumns = []string{"desired", "live", "running", "paused", "draining", "stopped", "offline"}

// poolCell returns the selector of one cell of a pool row.
func poolCell(pool, column string) string {
	for i, c := range poolColumns {
		if c == column {
			return fmt.Sprintf(`[id="pool-%s"] td:nth-of-type(%d)`, pool, i+1)
		}
	}
	panic("unknown pool column " + column)
}

// WaitCellNumber waits until the cell's text, before any note in brackets,
// is want.
func (p *tab) WaitCellNumber(timeout time.Duration, selector string, want int) {
	p.t.Helper()
	expr := fmt.Sprintf(`(() => { const el = document.querySelector(%s); return !!el && el.innerText.trim().split(/\s/)[0] === %s; })()`,
		jsString(selector), jsString(fmt.Sprint(want)))
	start := time.Now()
	for {
		ok, err := tryEval[bool](p, expr)
		if err == nil && ok {
			return
		}
		if time.Since(start) > timeout {
			got, _ := p.text(selector)
			p.fatalf("%s shows %q after %s; want %d", selector, got, timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// poolDesired returns the pool's desired_count from the API, or -1 when
// it is not set.
func (s *server) poolDesired(pool string) int {
	s.t.Helper()
	status, body := s.api(http.MethodGet, "/api/pools/"+pool, nil)
	if status != http.StatusOK {
		s.t.Fatalf("GET /api/pools/%s: status %d, body %s", pool, status, body)
	}
	var out struct {
		DesiredCount *int `json:"desired_count"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		s.t.Fatalf("GET /api/pools/%s: decode %s: %v", pool, body, err)
	}
	if out.DesiredCount == nil {
		return -1
	}
	return *out.DesiredCount
}

// typeScale types value into a pool's scale input, replacing what is there,
// and presses Set.
func (p *tab) typeScale(pool, value string) {
	p.t.Helper()
	input := chromedp.CSS(`[id="scale-` + pool + `"]`)
	p.run("type "+value+" into the scale form of "+pool,
		chromedp.SetValue(input, ""),
		chromedp.SendKeys(input, value),
		chromedp.Click(chromedp.CSS(`[id="pool-`+pool+`"] button[type=submit]`), chromedp.NodeVisible),
	)
}

func TestDashboardDrainAndScale(t *testing.T) {
	srv := startServer(t, nil)
	b := newBrowser(t)
	p := b.newTab("overview", "alice")
	p.Navigate(srv.URL() + overview)

	// Workers that start heartbeating after the page loaded appear live.
	workers := map[string]*fakeWorker{}
	for _, id := range workerIDs(3) {
		workers[id] = srv.startWorker(id, "billing")
	}
	for _, id := range workerIDs(3) {
		p.WaitAttr(5*time.Second, rowSelector(id), "data-status", "running")
	}
	p.SameDocument("three workers appeared")

	// Drain w-02 with its button and accept the confirm dialog.
	p.Click(`#row-w-02 button[aria-label="Drain w-02"]`)
	p.WaitText(2*time.Second, desiredCell("w-02"), "draining")
	p.WaitText(2*time.Second, rowSelector("w-02")+" [data-pending]", "requested, not yet applied")
	dialogs := p.Dialogs()
	if len(dialogs) != 1 || dialogs[0].Type != page.DialogTypeConfirm || !strings.Contains(dialogs[0].Message, "Drain w-02?") {
		p.fatalf("dialogs %+v; want one confirm that asks to drain w-02", dialogs)
	}
	if got := p.attr(rowSelector("w-02"), "data-status"); got != "running" {
		p.errorf("w-02 reports running, but its row says %q", got)
	}

	// The worker gets the drain in its next heartbeat response.
	waitFor(t, 2*heartbeatEvery+500*time.Millisecond, func() string {
		if got := workers["w-02"].LastDesired(); got != "draining" {
			return fmt.Sprintf("w-02's heartbeat response to carry desired_state draining (the last carried %q)", got)
		}
		return ""
	})

	// The worker complies and stops, so the mark goes away.
	workers["w-02"].SetStatus("stopped")
	p.WaitAttr(3*time.Second, rowSelector("w-02"), "data-status", "stopped")
	if n := p.count(rowSelector("w-02") + " [data-pending]"); n != 0 {
		p.errorf("w-02 reported stopped after a drain, but its row still marks the drain as not applied")
	}
	p.WaitCellNumber(3*time.Second, poolCell("billing", "running"), 2)
	p.WaitCellNumber(3*time.Second, poolCell("billing", "stopped"), 1)

	// Once it stops heartbeating it is shown as offline.
	workers["w-02"].Pause()
	p.WaitAttr(defaultGrace+3*time.Second, rowSelector("w-02"), "data-status", "offline")
	p.WaitCellNumber(3*time.Second, poolCell("billing", "offline"), 1)
	p.SameDocument("w-02 drained and went offline")

	// Scale the pool to 2.
	p.TrackRequests()
	p.typeScale("billing", "2")
	p.WaitCellNumber(2*time.Second, poolCell("billing", "desired"), 2)
	if got := srv.poolDesired("billing"); got != 2 {
		t.Errorf("API desired_count of billing = %d after scaling to 2 in the dashboard", got)
	}
	// The scale is also pushed to every dashboard at the hub's next tick,
	// and that push replaces the whole pools table unless one of its fields
	// is being edited, so let it pass before typing again.
	time.Sleep(hubTick + 500*time.Millisecond)

	// -1 and 100000 are stopped by the form's own constraints, with the
	// browser's message on the field and no request sent.
	for _, value := range []string{"-1", "100000"} {
		before := len(p.Requests())
		p.typeScale("billing", value)
		time.Sleep(300 * time.Millisecond)
		msg := eval[string](p, `document.querySelector("#scale-billing").validationMessage`)
		if msg == "" {
			p.errorf("scale input accepts %s: no validation message", value)
		}
		if got := p.Requests()[before:]; len(got) != 0 {
			p.errorf("scale %s sent %+v; the form's constraints should stop it", value, got)
		}
	}

	// Without those constraints (an old page, a browser that does not
	// check them) the server rejects the value and shows the reason in the
	// row.
	for _, value := range []string{"-1", "100000"} {
		eval[bool](p, `(() => { const el = document.querySelector("#scale-billing"); el.removeAttribute("min"); el.removeAttribute("max"); return true; })()`)
		p.typeScale("billing", value)
		p.WaitText(2*time.Second, "#pool-billing .field-error", "got "+value)
		if got := p.attr("#scale-billing", "aria-invalid"); got != "true" {
			p.errorf("scale input after the error for %s: aria-invalid=%q; want true", value, got)
		}
		reqs := p.Requests()
		if last := reqs[len(reqs)-1]; last.Status != http.StatusUnprocessableEntity {
			p.errorf("scale %s got status %d; want 422", value, last.Status)
		}
		p.WaitCellNumber(time.Second, poolCell("billing", "desired"), 2)
	}
	if got := srv.poolDesired("billing"); got != 2 {
		t.Errorf("API desired_count of billing = %d after rejected values; want 2", got)
	}
	p.SameDocument("scale errors shown")
}

// A live update of the pools table must not throw away what the operator
// is typing into a scale form, and once the operator gives up the edit the
// table must catch up with what it missed meanwhile.
func TestScaleFormKeptOnLiveUpdate(t *testing.T) {
	srv := startServer(t, nil)
	srv.startWorker("w-01", "billing")
	b := newBrowser(t)
	p := b.newTab("overview", "alice")
	p.Navigate(srv.URL() + overview)
	p.WaitAttr(5*time.Second, rowSelector("w-01"), "data-status", "running")
	time.Sleep(hubTick + 500*time.Millisecond) // let the first pushes after connecting pass

	// An unsubmitted value, then another pool appears.
	p.run("type 7 without submitting", chromedp.SendKeys(chromedp.CSS("#scale-billing"), "7"))
	srv.startWorker("w-02", "reports")
	p.WaitAttr(3*time.Second, rowSelector("w-02"), "data-status", "running")
	time.Sleep(hubTick)
	if got := eval[string](p, `document.querySelector("#scale-billing").value`); got != "7" {
		p.errorf("the scale input of billing holds %q after a live update of the pools table; the operator typed 7", got)
	}

	// The operator clears the field and clicks elsewhere. Nothing changes
	// in the fleet after that, so no new push comes; the table must still
	// show the pool that appeared during the edit.
	p.run("clear the field and leave it",
		chromedp.SetValue(chromedp.CSS("#scale-billing"), ""),
		chromedp.Click(chromedp.CSS("#pools-heading")),
	)
	time.Sleep(2 * hubTick)
	_, rendered := srv.request(http.MethodGet, srv.URL(), overview, nil, http.Header{"Authorization": {basicAuth("alice")}})
	if !strings.Contains(string(rendered), `id="pool-reports"`) {
		t.Fatalf("the server does not render pool reports either; the test assumes it does")
	}
	if n := p.count("#pool-reports"); n != 1 {
		p.errorf("the pools table still lacks pool reports %s after the operator left the scale field, while a reload shows it: "+
			"the update skipped during the edit is never applied", 2*hubTick)
	}
	p.SameDocument("edit abandoned")
}

// An inline scale error stays until the operator acts on it, even when
// another pool's counts change meanwhile.
func TestScaleErrorKeptOnLiveUpdate(t *testing.T) {
	srv := startServer(t, nil)
	srv.startWorker("w-01", "billing")
	srv.startWorker("w-02", "reports")
	b := newBrowser(t)
	p := b.newTab("overview", "alice")
	p.Navigate(srv.URL() + overview)
	p.WaitCellNumber(5*time.Second, poolCell("reports", "live"), 1)
	time.Sleep(hubTick + 500*time.Millisecond) // let the first pushes after connecting pass

	eval[bool](p, `(() => { document.querySelector("#scale-billing").removeAttribute("min"); return true; })()`)
	p.typeScale("billing", "-1")
	p.WaitText(2*time.Second, "#pool-billing .field-error", "got -1")

	srv.startWorker("w-03", "reports")
	p.WaitCellNumber(3*hubTick, poolCell("reports", "live"), 2)
	if n := p.count("#pool-billing .field-error"); n != 1 {
		p.errorf("the inline scale error of billing vanished when a worker joined another pool")
	}
}

// Worker ids and pool names may contain dots, as host names do; every
// button must work for them.
func TestDottedNamesUsable(t *testing.T) {
	const id, pool = "api.eu-1.w01", "jobs.eu"
	srv := startServer(t, nil)
	srv.startWorker(id, pool)
	b := newBrowser(t)
	p := b.newTab("overview", "alice")
	p.Navigate(srv.URL() + overview)
	p.WaitAttr(5*time.Second, rowSelector(id), "data-status", "running")
	time.Sleep(hubTick + 500*time.Millisecond) // let the first pushes after connecting pass
	eval[bool](p, `(() => {
		window.__e2eErrors = [];
		document.body.addEventListener("htmx:targetError", (e) => window.__e2eErrors.push("htmx:targetError " + e.detail.target));
		window.addEventListener("error", (e) => window.__e2eErrors.push(e.message));
		return true;
	})()`)

	p.Click(`button[aria-label="Pause ` + id + `"]`)
	time.Sleep(time.Second)
	if got := srv.worker(id).DesiredState; got != "paused" {
		p.errorf("clicking Pause on worker %s left its desired state %q; page errors: %v", id, got, eval[[]string](p, `window.__e2eErrors`))
	} else {
		p.WaitText(time.Second, desiredCell(id), "paused")
	}

	eval[bool](p, `(() => { document.querySelector('[id="scale-`+pool+`"]').removeAttribute("min"); window.__e2eErrors = []; return true; })()`)
	p.typeScale(pool, "-1")
	time.Sleep(time.Second)
	if n := p.count(`[id="pool-` + pool + `"] .field-error`); n != 1 {
		p.errorf("scaling pool %s to -1 shows no inline error; page errors: %v", pool, eval[[]string](p, `window.__e2eErrors`))
	}

	// The worker page targets its panel by a fixed id, so it works.
	action, want := "Pause", "paused"
	if srv.worker(id).DesiredState == "paused" {
		action, want = "Resume", "running"
	}
	p.Navigate(srv.URL() + uiPrefix + "/workers/" + id)
	p.Click(`button[aria-label="` + action + ` ` + id + `"]`)
	waitFor(t, 2*time.Second, func() string {
		if got := srv.worker(id).DesiredState; got != want {
			return fmt.Sprintf("%s on the worker page to make %s %s (it is %s)", action, id, want, got)
		}
		return ""
	})
}

// waitResponses waits for n more accepted heartbeats of w after the first
// `since` ones, fails unless each response's desired_state is want, and
// returns the new number of accepted heartbeats.
func waitResponses(t *testing.T, w *fakeWorker, since, n int, want string) int {
	t.Helper()
	waitFor(t, time.Duration(n+2)*heartbeatEvery, func() string {
		if got := len(w.Responses()) - since; got < n {
			return fmt.Sprintf("%d more heartbeats of %s (%d so far)", n, w.ID(), got)
		}
		return ""
	})
	all := w.Responses()
	for i, got := range all[since:] {
		if got != want {
			t.Errorf("heartbeat %d of %s was answered with desired_state %q; want %q", since+i+1, w.ID(), got, want)
		}
	}
	return len(all)
}

// A worker that ignores a drain keeps getting desired_state draining, also
// across a restart, and the dashboard shows the drain as requested but not
// applied.
func TestIgnoredDrainShown(t *testing.T) {
	srv := startServer(t, nil)
	srv.scale("billing", 3)
	workers := map[string]*fakeWorker{}
	for _, id := range workerIDs(3) {
		workers[id] = srv.startWorker(id, "billing")
	}
	w1 := workers["w-01"]
	b := newBrowser(t)
	p := b.newTab("overview", "alice")
	p.Navigate(srv.URL() + overview)
	p.WaitCellNumber(3*time.Second, poolCell("billing", "desired"), 3)
	p.WaitCellNumber(3*time.Second, poolCell("billing", "running"), 3)

	// Drained through the API, w-01 goes on reporting running with its
	// job count rising.
	srv.command("w-01", "drain")
	seen := len(w1.Responses())
	p.WaitText(2*hubTick, desiredCell("w-01"), "draining")
	p.WaitText(time.Second, rowSelector("w-01")+" [data-pending]", "requested, not yet applied")
	seen = waitResponses(t, w1, seen, 3, "draining")
	if got := p.attr(rowSelector("w-01"), "data-status"); got != "running" {
		p.errorf("w-01 reports running, but its row says %q", got)
	}
	if n := p.count(rowSelector("w-01") + " [data-pending]"); n != 1 {
		p.errorf("after three heartbeats that ignored the drain, w-01's row has %d not-applied marks; want 1", n)
	}
	p.WaitCellNumber(time.Second, poolCell("billing", "desired"), 3)
	p.WaitCellNumber(time.Second, poolCell("billing", "running"), 3)
	p.WaitCellNumber(time.Second, poolCell("billing", "draining"), 0)
	p.SameDocument("drain requested")

	// The service restarts. The drain survives and the page reconnects.
	srv.Stop()
	srv.Start()
	p.WaitStreamOpen(15 * time.Second)
	seen = waitResponses(t, w1, seen, 2, "draining")
	p.WaitText(2*hubTick, desiredCell("w-01"), "draining")
	if n := p.count(rowSelector("w-01") + " [data-pending]"); n != 1 {
		p.errorf("after the restart w-01's row has %d not-applied marks; want 1", n)
	}

	// w-01 complies: 2 running and 1 draining against a desired 3.
	w1.SetStatus("draining")
	p.WaitAttr(3*time.Second, rowSelector("w-01"), "data-status", "draining")
	p.WaitCellNumber(2*hubTick, poolCell("billing", "running"), 2)
	p.WaitCellNumber(time.Second, poolCell("billing", "draining"), 1)
	p.WaitCellNumber(time.Second, poolCell("billing", "desired"), 3)
	if n := p.count(rowSelector("w-01") + " [data-pending]"); n != 0 {
		p.errorf("w-01 reports draining, but its row still marks the drain as not applied")
	}
	waitResponses(t, w1, seen, 1, "draining")

	// Later it stops.
	w1.SetStatus("stopped")
	p.WaitAttr(3*time.Second, rowSelector("w-01"), "data-status", "stopped")
	p.WaitCellNumber(2*hubTick, poolCell("billing", "draining"), 0)
	p.WaitCellNumber(time.Second, poolCell("billing", "stopped"), 1)
	p.WaitCellNumber(time.Second, poolCell("billing", "running"), 2)
	p.SameDocument("w-01 drained and stopped")
}
