package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/verifier/controlplane/app/testenv"
)

// chromiumPath is Debian's Chromium package.
const chromiumPath = "/usr/bin/chromium"

// countEventSources runs before any page script. It wraps EventSource so a
// test can count the streams that a page opened and still holds, and it
// records in sessionStorage whether the page was kept in the back/forward
// cache when the tab left it.
const countEventSources = `(() => {
	window.addEventListener("pagehide", (e) => {
		sessionStorage.setItem("e2e-left-to-bfcache", String(e.persisted));
	});
	const Native = window.EventSource;
	window.__e2eStreams = [];
	window.EventSource = class extends Native {
		constructor(...args) {
			super(...args);
			window.__e2eStreams.push(this);
		}
	};
})();`

// browser is one headless Chromium with its own profile. Its tabs share
// the profile and so the browser's limit of six HTTP/1.1 connections per
// host.
type browser struct {
	t      *testing.T
	root   context.Context // the first tab, whose end ends the browser
	cancel context.CancelFunc
	tabs   []*tab
}

// newBrowser starts Chromium, or skips the test without it (fails when
// CONTROLPLANE_REQUIRE_SERVICES=1). extra options follow the defaults. The
// browser ends with the test, after a screenshot of every tab if the test
// failed.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("Chromium is not installed at %s (Debian package chromium): %v", chromiumPath, err))
	}
	// The defaults already turn off background networking and throttling
	// of background tabs, so every tab keeps its timers and stream running.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
	)
	opts = append(opts, extra...)

	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	root, cancelRoot := chromedp.NewContext(allocCtx)
	if err := chromedp.Do(root); err != nil {
		cancelRoot()
		cancelAlloc()
		t.Fatalf("start Chromium %s: %v", chromiumPath, err)
	}

	b := &browser{t: t, root: root, cancel: func() { cancelRoot(); cancelAlloc() }}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range b.tabs {
				if path := p.screenshot(); path != "" {
					t.Logf("screenshot of tab %s: %s", p.name, path)
				}
			}
		}
		for _, p := range b.tabs {
			p.cancel()
		}
		b.cancel()
	})
	return b
}

// tab is one browser tab logged in to the dashboard with Basic auth.
type tab struct {
	t      *testing.T
	name   string
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	dialogs []dialog
}

// dialog is a JavaScript dialog that the page opened.
type dialog struct {
	Type    page.DialogType
	Message string
}

// newTab opens a tab whose every request carries the Basic credentials of
// user, accepts every confirm() dialog and records every dialog.
func (b *browser) newTab(name, user string) *tab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.root)
	p := &tab{t: b.t, name: name, ctx: ctx, cancel: cancel}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.dialogs = append(p.dialogs, dialog{Type: ev.Type, Message: ev.Message})
			p.mu.Unlock()
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
	if err == nil {
		_, err = chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": basicAuth(user)},
		})
	}
	if err == nil {
		_, err = chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: countEventSources})
	}
	if err != nil {
		b.t.Fatalf("open tab %s: %v", name, err)
	}
	b.tabs = append(b.tabs, p)
	return p
}

// Dialogs returns every dialog the page has opened so far.
func (p *tab) Dialogs() []dialog {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]dialog(nil), p.dialogs...)
}

// screenshot saves a full-page PNG to a temporary file and returns its
// path, or "" when the tab cannot take one.
func (p *tab) screenshot() string {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot of tab %s failed: %v", p.name, err)
		return ""
	}
	f, err := os.CreateTemp("", "controlplane-e2e-*.png")
	if err != nil {
		p.t.Logf("screenshot of tab %s: %v", p.name, err)
		return ""
	}
	defer f.Close()
	if _, err := f.Write(png); err != nil {
		p.t.Logf("screenshot of tab %s: %v", p.name, err)
		return ""
	}
	return f.Name()
}

// fatalf fails the test with a screenshot of this tab named in the message.
func (p *tab) fatalf(format string, args ...any) {
	p.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if path := p.screenshot(); path != "" {
		msg += "\nscreenshot: " + path
	}
	p.t.Fatalf("tab %s: %s", p.name, msg)
}

// errorf records a failure with a screenshot and lets the test go on.
func (p *tab) errorf(format string, args ...any) {
	p.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if path := p.screenshot(); path != "" {
		msg += "\nscreenshot: " + path
	}
	p.t.Errorf("tab %s: %s", p.name, msg)
}

// run runs chromedp actions with a deadline and fails the test on error.
func (p *tab) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fatalf("%s: %v", what, err)
	}
}

// Navigate loads url and waits for htmx to open the page's event stream.
func (p *tab) Navigate(url string) {
	p.t.Helper()
	p.NavigateWithin(15*time.Second, url)
}

// NavigateWithin is Navigate with a deadline for the page load.
func (p *tab) NavigateWithin(timeout time.Duration, url string) {
	p.t.Helper()
	if err := p.tryNavigate(timeout, url); err != nil {
		p.fatalf("navigate to %s: %v", url, err)
	}
	p.WaitStreamOpen(10 * time.Second)
	p.MarkDocument()
}

// tryNavigate starts loading url and waits for the load, up to timeout.
func (p *tab) tryNavigate(timeout time.Duration, url string) error {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, chromedp.Navigate(url))
}

// LeftToBackForwardCache reports whether the page the tab showed before
// this one was kept in the back/forward cache.
func (p *tab) LeftToBackForwardCache() bool {
	p.t.Helper()
	return eval[string](p, `String(sessionStorage.getItem("e2e-left-to-bfcache"))`) == "true"
}

// Reload reloads the page and waits for its event stream.
func (p *tab) Reload() {
	p.t.Helper()
	p.run("reload", chromedp.Reload())
	p.WaitStreamOpen(10 * time.Second)
	p.MarkDocument()
}

// MarkDocument tags the current document, so SameDocument can tell that no
// reload or navigation happened since.
func (p *tab) MarkDocument() {
	p.t.Helper()
	eval[bool](p, "window.__e2eMarked = true")
}

// SameDocument fails the test when the page was reloaded or left since
// the last MarkDocument.
func (p *tab) SameDocument(step string) {
	p.t.Helper()
	if !eval[bool](p, "window.__e2eMarked === true") {
		p.fatalf("%s: the page was reloaded; the dashboard must update in place", step)
	}
}

// WaitStreamOpen waits for <body data-stream="open">.
func (p *tab) WaitStreamOpen(timeout time.Duration) {
	p.t.Helper()
	p.WaitJS(timeout, `document.body && document.body.dataset.stream === "open"`, `body[data-stream="open"]`)
}

// eval evaluates a JavaScript expression and returns its result decoded
// as T.
func eval[T any](p *tab, expr string) T {
	p.t.Helper()
	v, err := tryEval[T](p, expr)
	if err != nil {
		p.fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// tryEval is eval that returns the error instead of failing the test.
func tryEval[T any](p *tab, expr string, opts ...chromedp.EvaluateOption) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
}

// evalAwait is eval for an expression that returns a promise: it returns
// the promise's value.
func evalAwait[T any](p *tab, expr string) T {
	p.t.Helper()
	v, err := tryEval[T](p, expr, func(params *runtime.EvaluateParams) { params.AwaitPromise = new(true) })
	if err != nil {
		p.fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// WaitJS polls a boolean JavaScript expression every 50 ms until it is true
// and returns how long that took. On timeout it fails with a screenshot.
func (p *tab) WaitJS(timeout time.Duration, expr, what string) time.Duration {
	p.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, err := tryEval[bool](p, "Boolean("+expr+")")
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			p.fatalf("%s not seen within %s (last error %v)\nbody data-stream=%q", what, timeout, err, p.attr("body", "data-stream"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitText waits until the innerText of selector contains want and returns
// how long that took.
func (p *tab) WaitText(timeout time.Duration, selector, want string) time.Duration {
	p.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		got, found := p.text(selector)
		if found && strings.Contains(got, want) {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			p.fatalf("%s does not show %q within %s; it shows %q (element found: %v)", selector, want, timeout, got, found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitAttr waits until selector's attribute name equals want and returns how
// long that took.
func (p *tab) WaitAttr(timeout time.Duration, selector, name, want string) time.Duration {
	p.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		if got := p.attr(selector, name); got == want {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			p.fatalf("%s[%s] is %q after %s; want %q", selector, name, p.attr(selector, name), timeout, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// text returns the innerText of the first element matching selector.
func (p *tab) text(selector string) (text string, found bool) {
	p.t.Helper()
	type result struct {
		Found bool   `json:"found"`
		Text  string `json:"text"`
	}
	res, err := tryEval[result](p, fmt.Sprintf(`(() => { const el = document.querySelector(%s); return {found: !!el, text: el ? el.innerText : ""}; })()`, jsString(selector)))
	if err != nil {
		return "evaluate: " + err.Error(), false
	}
	return res.Text, res.Found
}

// attr returns an attribute of the first element matching selector, or
// "<missing>" when there is no such element.
func (p *tab) attr(selector, name string) string {
	p.t.Helper()
	v, err := tryEval[string](p, fmt.Sprintf(`(() => { const el = document.querySelector(%s); return el ? String(el.getAttribute(%s)) : "<missing>"; })()`, jsString(selector), jsString(name)))
	if err != nil {
		return "evaluate: " + err.Error()
	}
	return v
}

// count returns the number of elements matching selector.
func (p *tab) count(selector string) int {
	p.t.Helper()
	return eval[int](p, fmt.Sprintf(`document.querySelectorAll(%s).length`, jsString(selector)))
}

// OpenStreams returns how many EventSources this document opened and how
// many of them are not closed.
func (p *tab) OpenStreams() (opened, open int) {
	p.t.Helper()
	type result struct {
		Opened int `json:"opened"`
		Open   int `json:"open"`
	}
	res := eval[result](p, `({opened: window.__e2eStreams.length, open: window.__e2eStreams.filter(s => s.readyState !== EventSource.CLOSED).length})`)
	return res.Opened, res.Open
}

// Click clicks the first element matching selector. A live update can
// replace the element between the lookup and the click, so a click on a
// node that has gone is tried again, up to three times.
func (p *tab) Click(selector string) {
	p.t.Helper()
	var err error
	for range 3 {
		ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
		err = chromedp.Do(ctx, chromedp.Click(chromedp.CSS(selector), chromedp.NodeVisible))
		cancel()
		if err == nil || !strings.Contains(err.Error(), "Could not find node") {
			break
		}
	}
	if err != nil {
		p.fatalf("click %s: %v", selector, err)
	}
}

// rowSelector returns the selector of a worker's row on the overview. An
// attribute selector works for every valid id, including ids with dots.
func rowSelector(id string) string { return `[id="row-` + id + `"]` }

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// htmxRequest is one request that htmx sent and its response status.
type htmxRequest struct {
	Verb   string `json:"verb"`
	Path   string `json:"path"`
	Status int    `json:"status"`
}

// TrackRequests records every htmx request of this document from now on.
func (p *tab) TrackRequests() {
	p.t.Helper()
	eval[bool](p, `(() => {
		window.__e2eRequests = [];
		document.body.addEventListener("htmx:afterRequest", (e) => window.__e2eRequests.push({
			verb: String(e.detail.requestConfig.verb).toUpperCase(),
			path: e.detail.requestConfig.path,
			status: e.detail.xhr.status,
		}));
		return true;
	})()`)
}

// Requests returns the htmx requests recorded since TrackRequests.
func (p *tab) Requests() []htmxRequest {
	p.t.Helper()
	return eval[[]htmxRequest](p, `window.__e2eRequests || []`)
}
