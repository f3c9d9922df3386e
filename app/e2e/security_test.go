package e2e

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Payloads that a worker or an operator may send as plain text. Each is
// unique, so a test can tell where it ended up.
const (
	hostPayload    = `<img src=x onerror=alert(1)>`
	versionPayload = `<script>alert(2)</script>`
	reasonPayload  = `<svg onload=alert(3)>`
	userPayload    = `<img src=y onerror=alert(4)>`
	livePayload    = `<img src=z onerror=alert(5)><b>bold</b>`
)

// injectedElements counts elements and attributes that only an unescaped
// payload could have created.
const injectedElements = `document.querySelectorAll(
	'img[src="x"], img[src="y"], img[src="z"], svg[onload], [onerror], [onload], b'
).length + [...document.scripts].filter((s) => s.textContent.includes("alert(")).length`

// assertNoInjection checks that no payload became markup or ran, and that
// each of want is visible as text.
func assertNoInjection(p *tab, step string, want ...string) {
	p.t.Helper()
	if n := eval[int](p, injectedElements); n != 0 {
		html := eval[string](p, `document.querySelector("main").innerHTML`)
		p.errorf("%s: %d elements or attributes came from worker or operator text; main is:\n%s", step, n, html)
	}
	if d := p.Dialogs(); len(d) != 0 {
		p.errorf("%s: the page opened dialogs %+v", step, d)
	}
	text := eval[string](p, `document.body.innerText`)
	if missing := containsAll(text, want...); missing != "" {
		p.errorf("%s: the page does not show %q as text", step, missing)
	}
}

func TestWorkerTextEscaped(t *testing.T) {
	srv := startServer(t, nil)
	w := srv.startWorker("w-xss", "billing")
	w.SetMeta(hostPayload, versionPayload)
	if !w.Beat() {
		t.Fatalf("heartbeat with HTML in host and version: %v; host and version are free text", w.Err())
	}

	// Metric names are restricted, so HTML in one is rejected outright.
	code, _, _ := postHeartbeat(srv.http, srv.URL(), heartbeatBody{
		ID: "w-xss", Pool: "billing", Status: "running",
		Metrics: map[string]float64{`<b>x</b>`: 1},
	})
	if code != http.StatusBadRequest {
		t.Errorf("heartbeat with HTML in a metric name: status %d; want 400", code)
	}

	// An operator's reason lands in the activity list.
	status, body := srv.api(http.MethodPost, "/api/workers/w-xss/pause", map[string]string{"reason": reasonPayload})
	if status != http.StatusOK {
		t.Fatalf("pause w-xss with a reason: status %d, body %s", status, body)
	}

	// The Basic-auth user name becomes the actor of the next command.
	b := newBrowser(t)
	p := b.newTab("overview", userPayload)
	p.Navigate(srv.URL() + overview)
	p.WaitText(5*time.Second, rowSelector("w-xss"), hostPayload)
	assertNoInjection(p, "overview as first rendered", hostPayload, reasonPayload)

	p.Click(`#row-w-xss button[aria-label="Resume w-xss"]`)
	p.WaitText(3*time.Second, "#activity", userPayload)
	assertNoInjection(p, "overview after a command by an operator with HTML in the user name", userPayload)

	// A value that arrives through the event stream is escaped as well.
	w.SetMeta(livePayload, versionPayload)
	w.Beat()
	p.WaitText(3*time.Second, rowSelector("w-xss"), livePayload)
	assertNoInjection(p, "overview after a live update", livePayload)
	p.SameDocument("live update with HTML in the host")

	// The worker page shows host, version and the history.
	p.Navigate(srv.URL() + uiPrefix + "/workers/w-xss")
	p.WaitText(5*time.Second, "#worker", versionPayload)
	assertNoInjection(p, "worker page", livePayload, versionPayload, reasonPayload, userPayload)

	w.SetMeta(hostPayload, versionPayload)
	w.Beat()
	p.WaitText(3*time.Second, "#worker", hostPayload)
	assertNoInjection(p, "worker page after a live update", hostPayload, versionPayload)

	// The search term is echoed in the filter form, the pager and the
	// stream URL.
	p.Navigate(srv.URL() + overview + "?q=" + url.QueryEscape(hostPayload))
	p.WaitText(3*time.Second, rowSelector("w-xss"), hostPayload)
	if got := eval[string](p, `document.querySelector('input[name="q"]').value`); got != hostPayload {
		p.errorf("the search field holds %q; want the search term %q", got, hostPayload)
	}
	assertNoInjection(p, "overview searched for HTML", hostPayload)
}

func TestDashboardNeedsLogin(t *testing.T) {
	srv := startServer(t, nil)
	wrong := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:not-the-token-0123456789"))
	for _, path := range []string{overview, uiPrefix + "/workers/w-01", uiPrefix + "/events?view=overview"} {
		for _, auth := range []string{"", wrong, "Bearer not-the-token-0123456789"} {
			req, err := http.NewRequest(http.MethodGet, srv.URL()+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := srv.http.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s with Authorization %q: status %d; want 401", path, auth, resp.StatusCode)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("GET %s with Authorization %q: WWW-Authenticate %q; want a Basic challenge so the browser asks for a login", path, auth, got)
			}
		}
	}
}

// csrfMeta matches the token that every page carries for htmx.
var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([0-9a-f]+)"`)

func TestCrossSiteCommandRejected(t *testing.T) {
	srv := startServer(t, nil)
	if code, _ := srv.heartbeat(heartbeatBody{ID: "w-01", Pool: "billing", Status: "running"}); code != http.StatusOK {
		t.Fatalf("heartbeat: status %d", code)
	}
	basic := basicAuth("mallory")
	uiPause := uiPrefix + "/workers/w-01/pause"
	apiPause := "/api/workers/w-01/pause"

	// Valid Basic credentials, which a browser resends by itself, but no
	// CSRF token or a foreign origin.
	cases := []struct {
		name   string
		path   string
		header http.Header
	}{
		{"UI route without token", uiPause, http.Header{}},
		{"UI route from evil.example", uiPause, http.Header{"Origin": {"http://evil.example"}}},
		{"UI route cross-site fetch", uiPause, http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		{"UI route same-site fetch", uiPause, http.Header{"Sec-Fetch-Site": {"same-site"}}},
		{"UI route Origin null", uiPause, http.Header{"Origin": {"null"}}},
		{"UI route Origin with this host as prefix", uiPause, http.Header{"Origin": {srv.URL() + ".evil.example"}}},
		{"API route without token", apiPause, http.Header{}},
		{"API route from evil.example", apiPause, http.Header{"Origin": {"http://evil.example"}, "Sec-Fetch-Site": {"cross-site"}}},
		{"API route as a form post", apiPause, http.Header{"Origin": {"http://evil.example"}, "Content-Type": {"application/x-www-form-urlencoded"}}},
	}
	for _, tc := range cases {
		tc.header.Set("Authorization", basic)
		status, body := srv.request(http.MethodPost, srv.URL(), tc.path, nil, tc.header)
		if status != http.StatusForbidden {
			t.Errorf("%s: status %d; want 403; body %s", tc.name, status, body)
		}
		if got := srv.worker("w-01").DesiredState; got != "running" {
			t.Fatalf("%s: desired state of w-01 became %q; a rejected request must change nothing", tc.name, got)
		}
	}

	// The token from the page, sent from the page's own origin, passes.
	status, page := srv.request(http.MethodGet, srv.URL(), overview, nil, http.Header{"Authorization": {basic}})
	if status != http.StatusOK {
		t.Fatalf("GET overview: status %d", status)
	}
	m := csrfMeta.FindSubmatch(page)
	if m == nil {
		t.Fatalf("overview has no <meta name=\"csrf-token\">")
	}
	token := string(m[1])

	// A valid token does not make a foreign origin acceptable.
	status, _ = srv.request(http.MethodPost, srv.URL(), uiPause, nil, http.Header{
		"Authorization": {basic}, "X-Csrf-Token": {token}, "Origin": {"http://evil.example"},
	})
	if status != http.StatusForbidden {
		t.Errorf("UI route with the token but Origin http://evil.example: status %d; want 403", status)
	}

	same := http.Header{"Authorization": {basic}, "X-Csrf-Token": {token}, "Origin": {srv.URL()}, "Sec-Fetch-Site": {"same-origin"}}
	if status, body := srv.request(http.MethodPost, srv.URL(), uiPause, nil, same); status != http.StatusOK {
		t.Fatalf("UI route with the page's token from the same origin: status %d, body %s", status, body)
	}
	if got := srv.worker("w-01").DesiredState; got != "paused" {
		t.Errorf("desired state of w-01 = %q after an accepted pause; want paused", got)
	}
	if status, body := srv.request(http.MethodPost, srv.URL(), "/api/workers/w-01/resume", nil, same); status != http.StatusOK {
		t.Fatalf("API route with the page's token from the same origin: status %d, body %s", status, body)
	}
	if got := srv.worker("w-01").DesiredState; got != "running" {
		t.Errorf("desired state of w-01 = %q after an accepted resume; want running", got)
	}
}

// evilPage is a page on another site that posts to the dashboard as soon
// as it loads, once with a form and once with fetch.
const evilPage = `<!DOCTYPE html>
<html><body>
<form id="f" method="post" action="%[1]s/verifier-engine-room/workers/w-01/pause"></form>
<script>
fetch("%[1]s/api/workers/w-01/drain", {method: "POST", mode: "no-cors", credentials: "include"})
	.finally(() => document.getElementById("f").submit());
</script>
</body></html>`

func TestCrossSiteFormInBrowser(t *testing.T) {
	srv := startServer(t, nil)
	srv.startWorker("w-01", "billing")
	b := newBrowser(t)
	p := b.newTab("evil", "operator") // the browser holds Basic credentials

	// Same-origin fetch from the dashboard with the page's token works.
	p.Navigate(srv.URL() + overview)
	status := evalAwait[int](p, `fetch("/verifier-engine-room/workers/w-01/pause", {
		method: "POST",
		headers: {"X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content},
	}).then((r) => r.status)`)
	if status != http.StatusOK {
		p.fatalf("same-origin fetch with the CSRF token: status %d; want 200", status)
	}
	srv.command("w-01", "resume")

	// A page on another site: localhost and 127.0.0.1 are different sites.
	hits := make(chan struct{}, 1)
	evil := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hits <- struct{}{}:
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, evilPage, srv.URL())
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	evil.Listener = ln
	evil.Start()
	t.Cleanup(evil.Close)
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	p.run("open the other site", chromedp.Navigate("http://localhost:"+port+"/"))
	select {
	case <-hits:
	case <-time.After(5 * time.Second):
		p.fatalf("the browser did not load the page of the other site")
	}
	// The form's navigation shows the dashboard's response.
	p.WaitText(5*time.Second, "body", "cross-site request rejected")
	if got := srv.worker("w-01").DesiredState; got != "running" {
		t.Errorf("desired state of w-01 = %q after posts from another site; want running", got)
	}
	if !strings.HasPrefix(eval[string](p, `location.href`), srv.URL()) {
		t.Errorf("the form did not reach the dashboard; the test proves nothing")
	}
}
