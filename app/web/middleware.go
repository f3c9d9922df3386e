package web

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
)

// quietRoutes are logged at Debug: a fleet sends heartbeats and probes many
// times a second, and /metrics counts them instead.
var quietRoutes = map[string]bool{
	"/api/workers/heartbeat":   true,
	"/healthz":                 true,
	"/readyz":                  true,
	"/metrics":                 true,
	UIPrefix + "/static/:name": true,
}

// observe records each request's duration by route template, never by raw
// path, so worker ids never become label values, and logs one line per
// request.
func (s *Server) observe(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	status := c.Response().StatusCode()
	if err != nil {
		// The error handler has not run yet; predict its status.
		status = statusByCode[toUserError(err, BodyLimit).Code]
	}
	route := c.Route().Path
	if status == fiber.StatusNotFound && route == "/" {
		route = "unmatched"
	}
	elapsed := time.Since(start)
	s.deps.Metrics.HTTPDuration.WithLabelValues(c.Method(), route, strconv.Itoa(status)).Observe(elapsed.Seconds())

	level := slog.LevelInfo
	if quietRoutes[route] && status < 500 {
		level = slog.LevelDebug
	}
	s.deps.Log.Log(c.UserContext(), level, "request", "method", c.Method(), "route", route, "status", status, "duration", elapsed)
	return err
}
