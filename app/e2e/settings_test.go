package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestSettingChangedInBrowser changes the heartbeat grace on the Settings
// page of one replica: a wrong value shows an inline error and changes
// nothing, a right one is in force on both replicas within seconds, and a
// worker silent for longer than the old grace but not the new one stays
// online on the other replica.
func TestSettingChangedInBrowser(t *testing.T) {
	srv := startServer(t, nil)
	other, _ := srv.StartReplica()
	otherURL := "http://" + other.Addr().String()
	w := srv.startWorker("w-01", "billing")

	b := newBrowser(t)
	p := b.newTab("settings", "alice")
	// The Settings page has no event stream, so Navigate, which waits for
	// one, does not fit.
	if err := p.tryNavigate(15*time.Second, srv.URL()+uiPrefix+"/settings"); err != nil {
		p.fatalf("open the Settings page: %v", err)
	}
	p.WaitAttr(5*time.Second, `[data-source="heartbeat_grace_seconds"]`, "data-source", "heartbeat_grace_seconds")
	if got, _ := p.text(`[data-source="heartbeat_grace_seconds"]`); !strings.Contains(got, "environment") {
		p.errorf("grace source = %q before any change, want it from the environment", got)
	}

	setGrace := func(value string) {
		t.Helper()
		input := chromedp.CSS(`#setting-heartbeat_grace_seconds`)
		p.run("set the heartbeat grace to "+value,
			chromedp.SetValue(input, ""),
			chromedp.SendKeys(input, value),
			chromedp.Click(chromedp.CSS(`#settings-form button.btn-primary[type=submit]`), chromedp.NodeVisible),
		)
	}

	// Below the heartbeat interval: rejected inline, nothing stored.
	setGrace("0")
	p.WaitText(3*time.Second, `[data-error-for="heartbeat_grace_seconds"]`, "must be")
	if got := srv.App().Settings.Current().HeartbeatGrace; got != defaultGrace {
		p.errorf("an invalid grace changed the grace in force to %s", got)
	}

	// A valid value is saved, shown as an override, and in force on both
	// replicas: the other one reloads when the change is announced.
	const newGrace = 8 * time.Second
	setGrace(fmt.Sprint(int(newGrace.Seconds())))
	p.WaitText(3*time.Second, `#settings-form [role="status"]`, "Saved")
	p.WaitText(3*time.Second, `[data-source="heartbeat_grace_seconds"]`, "runtime override")
	waitFor(t, 6*time.Second, func() string {
		if got := other.Settings.Current().HeartbeatGrace; got != newGrace {
			return fmt.Sprintf("the other replica's grace is %s, want %s", got, newGrace)
		}
		return ""
	})

	// The worker falls silent for longer than the old grace: the other
	// replica, using the new grace, still shows it online.
	w.Pause()
	time.Sleep(defaultGrace + 2*time.Second)
	status, body := srv.request(http.MethodGet, otherURL, "/api/workers/w-01", nil, http.Header{"Authorization": {"Bearer " + testToken}})
	if status != http.StatusOK {
		t.Fatalf("GET worker on the other replica: status %d, body %s", status, body)
	}
	var got apiWorker
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode worker: %v", err)
	}
	if got.Stale {
		t.Errorf("w-01 is stale on the other replica %s after its last heartbeat; the new grace of %s is not in force", defaultGrace+2*time.Second, newGrace)
	}
}
