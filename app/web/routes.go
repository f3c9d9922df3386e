package web

import "github.com/gofiber/fiber/v2"

// UIPrefix is the URL prefix of the dashboard.
const UIPrefix = "/verifier-engine-room"

// routes lists every route of the server.
func (s *Server) routes() {
	d := s.deps
	app := s.app
	app.Use(s.observe, securityHeaders)

	// Probes respond without auth and reveal nothing else.
	app.Get("/healthz", handleHealthz)
	app.Get("/readyz", s.handleReadyz)
	// Browsers ask for it on every page; there is none, and no login is
	// needed to say so.
	app.Get("/favicon.ico", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusNoContent) })

	// Basic credentials work here too, and browsers resend them to
	// cross-site forms, so the CSRF guard covers the API as well.
	api := app.Group("/api", requireToken(d.Token, challengeBearer), csrfGuard(CSRFToken(d.Token)))
	api.Post("/workers/heartbeat", handleHeartbeat(d.Service))
	api.Get("/workers", handleListWorkers(d.Service))
	api.Get("/workers/:id", handleGetWorker(d.Service))
	api.Post("/workers/:id/:action", handleWorkerCommand(d.Service, nil))
	api.Get("/pools", handleListPools(d.Service))
	api.Get("/pools/:pool", handleGetPool(d.Service))
	api.Post("/pools/:pool/scale", handleScalePool(d.Service, nil))
	api.Post("/pools/:pool/:action", handlePoolCommand(d.Service, nil))

	app.Get("/metrics", requireToken(d.Token, challengeBearer), s.handleMetrics())

	if d.UI != nil {
		d.UI.routes(app, s)
	}
	app.Get("/", func(c *fiber.Ctx) error { return c.Redirect(UIPrefix+"/overview", fiber.StatusFound) })
}
