package web

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
)

// observe records each request's duration by route template, never by raw
// path, so worker ids never become label values.
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
	s.deps.Metrics.HTTPDuration.WithLabelValues(c.Method(), route, strconv.Itoa(status)).Observe(time.Since(start).Seconds())
	return err
}
