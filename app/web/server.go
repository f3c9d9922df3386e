// Package web serves the control plane over HTTP with Fiber: the JSON API
// for workers and scripts, the HTMX dashboard, Server-Sent Events, health
// probes and /metrics.
package web

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/verifier/controlplane/app/metrics"
	"github.com/verifier/controlplane/app/service"
)

// BodyLimit is the largest request body accepted, in bytes. A heartbeat
// with 64 metrics and the longest strings fits in well under 16 KiB.
const BodyLimit = 64 * 1024

// Pinger checks a dependency for /readyz.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Deps are the server's dependencies, built by the cli package.
type Deps struct {
	Service  *service.Service
	Store    Pinger
	Metrics  *metrics.Metrics
	Gatherer prometheus.Gatherer
	Token    string
	Log      *slog.Logger
	// RetryAfter is the Retry-After sent with 503 responses, in seconds.
	RetryAfter int
	// UI serves the dashboard; nil serves the API alone.
	UI *UI
}

// Server is the HTTP face of the control plane.
type Server struct {
	app      *fiber.App
	deps     Deps
	draining atomic.Bool
}

// New builds the Fiber app with every route.
func New(d Deps) *Server {
	if d.RetryAfter <= 0 {
		d.RetryAfter = 5
	}
	s := &Server{deps: d}
	s.app = fiber.New(fiber.Config{
		AppName:               "control plane",
		DisableStartupMessage: true,
		BodyLimit:             BodyLimit,
		// ReadTimeout also ends connections that were opened but never used,
		// which would otherwise hold a shutdown until its deadline.
		ReadTimeout: 5 * time.Second,
		IdleTimeout: 120 * time.Second,
		// Immutable copies strings out of fasthttp's reused buffers, so a
		// value kept past the handler (as the event hub does) stays intact.
		Immutable:    true,
		ErrorHandler: errorHandler(d.Metrics, d.Log, BodyLimit, d.RetryAfter),
	})
	s.routes()
	return s
}

// App returns the Fiber app, for tests and for Listen.
func (s *Server) App() *fiber.App { return s.app }

// Listen serves on addr until Shutdown.
func (s *Server) Listen(addr string) error { return s.app.Listen(addr) }

// StartDraining makes /readyz return 503 so load balancers stop sending new
// requests while in-flight ones finish.
func (s *Server) StartDraining() { s.draining.Store(true) }

// Shutdown stops accepting connections and waits for in-flight requests
// until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.app.ShutdownWithContext(ctx) }
