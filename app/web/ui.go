package web

import (
	"github.com/gofiber/fiber/v2"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/service"
)

// UI serves the HTMX dashboard under UIPrefix.
type UI struct {
	svc *service.Service
}

func (u *UI) routes(app *fiber.App, s *Server) {}

func isHTMX(c *fiber.Ctx) bool { return c.Get("HX-Request") == "true" }

func renderInlineError(c *fiber.Ctx, status int, e *fleet.Error) error {
	return c.Status(status).SendString(e.Message)
}

func (u *UI) renderWorkerRow(c *fiber.Ctx, w *fleet.Worker) error { return c.JSON(toWorkerJSON(w)) }
func (u *UI) renderPoolRow(c *fiber.Ctx, p *fleet.Pool) error     { return c.JSON(toPoolJSON(p)) }
func (u *UI) renderScaleError(c *fiber.Ctx, pool string, err error) error {
	return err
}
func (u *UI) renderPoolCommandResult(c *fiber.Ctx, res service.PoolCommandResult) error {
	return c.JSON(res)
}
