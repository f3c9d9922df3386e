package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/gofiber/fiber/v2"

	"github.com/verifier/controlplane/app/alert"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/history"
	"github.com/verifier/controlplane/app/service"
	"github.com/verifier/controlplane/app/settings"
	"github.com/verifier/controlplane/static"
	"github.com/verifier/controlplane/views"
)

// UI serves the HTMX dashboard under UIPrefix.
type UI struct {
	svc    *service.Service
	assets *static.Assets
	csrf   string
	hub    *Hub
	alerts *alert.Engine
	// settings and channels serve the Settings page; nil hides it.
	settings *settings.Runtime
	channels []NotifyChannel
	// history is nil without MYSQL_DSN.
	history *history.Conn
}

// NewUI returns the dashboard.
func NewUI(svc *service.Service, assets *static.Assets, secret string) *UI {
	return &UI{svc: svc, assets: assets, csrf: CSRFToken(secret)}
}

// CSRFToken derives the CSRF token from the shared secret, so every replica
// accepts the token that any replica rendered, and no one without the
// secret can compute it.
func CSRFToken(secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("controlplane csrf v1"))
	return hex.EncodeToString(mac.Sum(nil))
}

// SetHub connects the event hub that serves /events.
func (u *UI) SetHub(h *Hub) { u.hub = h }

// SetAlerts connects the Alerts page to the alert engine.
func (u *UI) SetAlerts(a *alert.Engine) { u.alerts = a }

// SetSettings connects the Settings page to the runtime settings and the
// notification channels it can test.
func (u *UI) SetSettings(rt *settings.Runtime, channels []NotifyChannel) {
	u.settings, u.channels = rt, channels
}

// CSRFToken returns the token that state-changing browser requests carry.
func (u *UI) CSRFToken() string { return u.csrf }

func (u *UI) routes(app *fiber.App, s *Server) {
	g := app.Group(UIPrefix, requireToken(s.deps.Token, challengeBasic), csrfGuard(u.csrf))
	g.Get("/static/:name", u.assets.Handler())
	g.Get("/", func(c *fiber.Ctx) error { return c.Redirect(UIPrefix+"/overview", fiber.StatusFound) })
	g.Get("/overview", noStore, u.handleOverview)
	g.Get("/workers/:id", noStore, u.handleWorker)
	g.Get("/events", u.handleEvents)
	g.Post("/workers/:id/:action", handleWorkerCommand(u.svc, u))
	g.Post("/pools/:pool/scale", handleScalePool(u.svc, u))
	g.Post("/pools/:pool/:action", handlePoolCommand(u.svc, u))
	g.Get("/alerts", noStore, u.handleAlerts)
	g.Post("/alerts/silences", u.handleSilence)
	g.Post("/alerts/silences/:id/lift", u.handleLiftSilence)
	g.Get("/audit", u.handleAudit)
	g.Get("/charts/pools", u.handlePoolChart)
	g.Get("/charts/workers/:id", u.handleWorkerChart)
	g.Get("/settings", u.handleSettings)
	g.Post("/settings", u.handleSaveSettings)
	g.Post("/settings/test/:channel", u.handleTestChannel)
}

// securityHeaders applies to every response: the dashboard runs no inline
// script or style, may not be framed, and leaks no URL to other sites.
func securityHeaders(c *fiber.Ctx) error {
	c.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("X-Frame-Options", "DENY")
	c.Set("Referrer-Policy", "same-origin")
	return c.Next()
}

// csrfGuard rejects state-changing requests authenticated by Basic auth
// (which browsers resend to cross-site forms) unless they carry the CSRF
// token in X-CSRF-Token and come from this origin. Bearer requests pass:
// browsers never attach a bearer token by themselves.
func csrfGuard(csrf string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		switch c.Method() {
		case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
			return c.Next()
		}
		if _, source := actor(c); source != fleet.SourceUI {
			return c.Next()
		}
		if site := c.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
			return fleet.Errorf(fleet.EFORBIDDEN, "", "cross-site request rejected (Sec-Fetch-Site: %s)", site)
		}
		if origin := c.Get(fiber.HeaderOrigin); origin != "" {
			o, err := url.Parse(origin)
			if err != nil || o.Host != string(c.Request().Host()) {
				return fleet.Errorf(fleet.EFORBIDDEN, "", "cross-site request rejected: Origin %s does not match this host", origin)
			}
		}
		token := c.Get("X-CSRF-Token")
		if subtle.ConstantTimeCompare([]byte(token), []byte(csrf)) != 1 {
			return fleet.Errorf(fleet.EFORBIDDEN, "", "missing or invalid CSRF token: reload the page and try again")
		}
		return c.Next()
	}
}

func isHTMX(c *fiber.Ctx) bool { return c.Get("HX-Request") == "true" }

// render writes a component as the HTML response.
func render(c *fiber.Ctx, status int, comp templ.Component) error {
	c.Status(status).Type("html", "utf-8")
	return comp.Render(c.UserContext(), c.Response().BodyWriter())
}

// renderInlineError shows an error at the top of the page for htmx requests.
func renderInlineError(c *fiber.Ctx, status int, e *fleet.Error) error {
	c.Set("HX-Retarget", "#flash")
	c.Set("HX-Reswap", "innerHTML")
	return render(c, status, views.Flash(e.Message, true))
}

// noStore keeps pages out of the browser's back/forward cache, where a
// page would keep its event stream open and use up the six connections a
// browser allows per host.
func noStore(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Next()
}

func (u *UI) page(title, nav, stream string) views.Page {
	return views.Page{
		Title: title, Nav: nav, CSRF: u.csrf, Stream: stream,
		CSS: u.assets.Path("app.css"), JS: u.assets.Path("app.js"),
	}
}

func (u *UI) handleOverview(c *fiber.Ctx) error {
	f, err := parseWorkerFilter(c)
	if err != nil {
		return err
	}
	o := views.Overview{MaxDesired: u.svc.MaxDesiredCount()}
	o.Page = u.page("Overview", "overview", UIPrefix+"/events?"+streamQuery("overview", f, ""))

	entries, err := u.svc.Index(c.UserContext())
	if err != nil {
		if fleet.ErrorCode(err) != fleet.EUNAVAILABLE {
			return err
		}
		// Show the page with a warning rather than an error page: the
		// stream fills it in when Redis is back.
		o.Page.StoreDown = true
		o.Summary = views.Summary{Unknown: true, ErrorWindow: "recent"}
		o.Workers = u.workerList(f, nil, 0)
		return render(c, fiber.StatusOK, views.OverviewPage(o))
	}
	o.Pools, err = u.svc.PoolsFrom(c.UserContext(), entries)
	if err != nil {
		return err
	}
	o.Summary = u.summary(c.UserContext(), o.Pools)
	ids, total := u.svc.SelectPage(entries, f)
	workers, err := u.svc.WorkersByID(c.UserContext(), ids)
	if err != nil {
		return err
	}
	o.Workers = u.workerList(f, workers, total)
	o.Activity = u.activity(c.UserContext(), "")
	o.HistoryOn, o.Charts = u.historyOn(), overviewCharts(f.Pool)
	return render(c, fiber.StatusOK, views.OverviewPage(o))
}

func (u *UI) handleWorker(c *fiber.Ctx) error {
	id := c.Params("id")
	if err := fleet.ValidateName("id", id); err != nil {
		return err
	}
	d := u.workerDetail(c.UserContext(), id)
	d.Page = u.page(id, "overview", UIPrefix+"/events?view=worker&id="+url.QueryEscape(id))
	d.HistoryOn, d.Charts = u.historyOn(), workerCharts(id)
	status := fiber.StatusOK
	if d.Worker == nil {
		status = fiber.StatusNotFound
	}
	return render(c, status, views.WorkerPage(d))
}

// handleEvents streams fragments to one page. The page opens exactly one
// stream, and its query names what the page shows.
func (u *UI) handleEvents(c *fiber.Ctx) error {
	view := View{Kind: c.Query("view", "overview")}
	switch view.Kind {
	case "overview":
		f, err := parseWorkerFilter(c)
		if err != nil {
			return err
		}
		view.Filter = f
	case "worker":
		view.WorkerID = c.Query("id")
		if err := fleet.ValidateName("id", view.WorkerID); err != nil {
			return err
		}
	case "alerts":
	default:
		return fleet.Errorf(fleet.EINVALID, "view", "view must be overview, worker or alerts")
	}

	// The hub closes the connection when it drops a client that stopped
	// reading: the stream writer would block on the socket otherwise.
	cl := u.hub.Subscribe(c.UserContext(), view, c.Context().Conn())
	keepAlive := u.hub.opts.KeepAlive
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer u.hub.Unsubscribe(cl)
		// Browsers wait this long before reconnecting after the stream ends.
		if _, err := w.WriteString("retry: 2000\n\n"); err != nil || w.Flush() != nil {
			return
		}
		ticker := time.NewTicker(keepAlive)
		defer ticker.Stop()
		for {
			select {
			case msg, ok := <-cl.ch:
				if !ok {
					return // dropped, or the server is shutting down
				}
				if _, err := w.Write(msg); err != nil {
					return
				}
				// Write what else is queued before flushing once.
				for n := len(cl.ch); n > 0; n-- {
					msg, ok := <-cl.ch
					if !ok {
						break
					}
					if _, err := w.Write(msg); err != nil {
						return
					}
				}
				if err := w.Flush(); err != nil {
					return
				}
			case <-ticker.C:
				// A comment line: a vanished client fails this write.
				if _, err := w.WriteString(": keep-alive\n\n"); err != nil || w.Flush() != nil {
					return
				}
			}
		}
	})
	return nil
}

// streamQuery returns the events URL's query for a view.
func streamQuery(kind string, f service.WorkerFilter, id string) string {
	v := url.Values{"view": {kind}}
	if id != "" {
		v.Set("id", id)
	}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("pool", f.Pool)
	set("status", f.Status)
	set("q", f.Query)
	set("sort", f.Sort)
	if f.Stale != nil {
		v.Set("stale", strconv.FormatBool(*f.Stale))
	}
	if f.Limit != 0 && f.Limit != service.DefaultLimit {
		v.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Offset != 0 {
		v.Set("offset", strconv.Itoa(f.Offset))
	}
	return v.Encode()
}

// event renders a component once as a Server-Sent Event.
func (u *UI) event(name string, comp templ.Component) []byte {
	var html bytes.Buffer
	if err := comp.Render(context.Background(), &html); err != nil {
		return nil
	}
	var b bytes.Buffer
	b.Grow(html.Len() + 64)
	b.WriteString("event: ")
	b.WriteString(name)
	b.WriteByte('\n')
	for _, line := range strings.Split(strings.TrimRight(html.String(), "\n"), "\n") {
		b.WriteString("data: ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// initialState renders everything a view shows, for a client that has just
// connected, and returns the ids on an overview's page.
func (u *UI) initialState(ctx context.Context, v View) ([][]byte, []string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	down := [][]byte{u.event(views.EventStatus, views.StoreStatus(true))}
	switch v.Kind {
	case "overview":
		entries, err := u.svc.Index(ctx)
		if err != nil {
			return down, nil
		}
		pools, err := u.svc.PoolsFrom(ctx, entries)
		if err != nil {
			return down, nil
		}
		ids, total := u.svc.SelectPage(entries, v.Filter)
		workers, err := u.svc.WorkersByID(ctx, ids)
		if err != nil {
			return down, nil
		}
		return [][]byte{
			u.event(views.EventStatus, views.StoreStatus(false)),
			u.event(views.EventSummary, views.SummaryCards(u.summary(ctx, pools))),
			u.event(views.EventPools, views.PoolRows(pools, u.svc.MaxDesiredCount())),
			u.event(views.EventWorkers, views.WorkerTable(u.workerList(v.Filter, workers, total))),
			u.event(views.EventActivity, views.Activity(u.activity(ctx, ""))),
		}, ids
	case "worker":
		return [][]byte{
			u.event(views.EventStatus, views.StoreStatus(false)),
			u.event(views.EventWorker, views.WorkerPanel(u.workerDetail(ctx, v.WorkerID))),
			u.event(views.EventActivity, views.Activity(u.activity(ctx, v.WorkerID))),
		}, nil
	case "alerts":
		if u.alerts != nil {
			return [][]byte{u.event(views.EventAlerts, u.alertsFragment(ctx))}, nil
		}
	}
	return nil, nil
}

// summary builds the headline numbers; rates unavailable read as unknown.
func (u *UI) summary(ctx context.Context, pools []*fleet.Pool) views.Summary {
	sum, err := u.svc.Summary(ctx, pools)
	out := views.Summary{
		Live: sum.Live, ByStatus: sum.ByStatus, Stale: sum.Stale, Pools: sum.Pools,
		HeartbeatsPerMinute: sum.HeartbeatsPerMinute, ErrorWindow: "recent",
	}
	if err == nil && sum.Rates.Window > 0 {
		out.ErrorRate, out.HasErrorRate = fleet.ErrorRate(sum.Rates.Processed, sum.Rates.Failed)
		out.ErrorWindow = views.Age(sum.Rates.Window)
	}
	if u.history != nil {
		out.LastSnapshot = "none yet"
		if t := u.history.LastSnapshot(); !t.IsZero() {
			out.LastSnapshot = views.Clock(t)
		}
	}
	return out
}

func (u *UI) workerList(f service.WorkerFilter, workers []*fleet.Worker, total int) views.WorkerList {
	stale := ""
	if f.Stale != nil {
		stale = strconv.FormatBool(*f.Stale)
	}
	return views.WorkerList{
		Rows: workers, Pool: f.Pool, Status: f.Status, Stale: stale, Query: f.Query, Sort: f.Sort,
		Limit: f.Limit, Offset: f.Offset, Total: total, Now: u.svc.Now(),
	}
}

func (u *UI) workerDetail(ctx context.Context, id string) views.WorkerDetail {
	d := views.WorkerDetail{Now: u.svc.Now()}
	if w, err := u.svc.Worker(ctx, id); err == nil {
		d.Worker = w
	}
	d.History = u.activity(ctx, id)
	return d
}

// activity returns the latest audit entries, or none when they cannot be read.
func (u *UI) activity(ctx context.Context, workerID string) []fleet.AuditEntry {
	entries, err := u.svc.Audit(ctx, workerID, 20)
	if err != nil {
		return nil
	}
	return entries
}

// renderWorkerRow renders the response to a worker command from the
// dashboard: the panel on the worker page, else the row.
func (u *UI) renderWorkerRow(c *fiber.Ctx, w *fleet.Worker) error {
	if c.Get("HX-Target") == views.EventWorker {
		d := u.workerDetail(c.UserContext(), w.ID)
		d.Worker = w
		return render(c, fiber.StatusOK, views.WorkerPanel(d))
	}
	return render(c, fiber.StatusOK, views.WorkerRow(w, u.svc.Now()))
}

func (u *UI) renderPoolRow(c *fiber.Ctx, p *fleet.Pool) error {
	return render(c, fiber.StatusOK, views.PoolRow(p, u.svc.MaxDesiredCount(), ""))
}

// renderScaleError shows a scale validation error inside the pool's row.
func (u *UI) renderScaleError(c *fiber.Ctx, pool string, err error) error {
	p, perr := u.svc.Pool(c.UserContext(), pool)
	if perr != nil {
		return err
	}
	c.Set("HX-Retarget", views.IDSelector(views.PoolRowEvent(pool)))
	c.Set("HX-Reswap", "outerHTML")
	return render(c, fiber.StatusUnprocessableEntity, views.PoolRow(p, u.svc.MaxDesiredCount(), fleet.ErrorMessage(err)))
}

func (u *UI) renderPoolCommandResult(c *fiber.Ctx, res service.PoolCommandResult) error {
	msg := strconv.Itoa(len(res.Changed)) + " workers in pool " + res.Pool + " told to " + string(res.Action)
	if res.Skipped > 0 {
		msg += "; " + strconv.Itoa(res.Skipped) + " skipped because the command made no sense for them"
	}
	return render(c, fiber.StatusOK, views.Flash(msg, false))
}

func itoa(n int) string { return strconv.Itoa(n) }
