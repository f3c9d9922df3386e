package web

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/service"
)

// heartbeatRequest is the heartbeat body. Times stay strings so that a
// timestamp without a zone is rejected instead of read in a guessed zone,
// and metrics stay raw so that each value's type is checked by name.
type heartbeatRequest struct {
	ID        string                     `json:"id"`
	Pool      string                     `json:"pool"`
	Status    string                     `json:"status"`
	Host      string                     `json:"host"`
	PID       int64                      `json:"pid"`
	Version   string                     `json:"version"`
	StartedAt string                     `json:"started_at"`
	SentAt    string                     `json:"sent_at"`
	Metrics   map[string]json.RawMessage `json:"metrics"`
}

type heartbeatResponse struct {
	DesiredState             fleet.State `json:"desired_state"`
	HeartbeatIntervalSeconds int         `json:"heartbeat_interval_seconds"`
	ClockSkewWarning         bool        `json:"clock_skew_warning,omitempty"`
}

func handleHeartbeat(svc *service.Service) fiber.Handler {
	return func(c *fiber.Ctx) error {
		hb, err := parseHeartbeat(c.Body())
		if err != nil {
			svc.RejectHeartbeat(fleet.ErrorField(err))
			return err
		}

		res, err := svc.Heartbeat(c.UserContext(), hb)
		if err != nil {
			return err
		}

		return c.JSON(heartbeatResponse{
			DesiredState:             res.Desired,
			HeartbeatIntervalSeconds: int(res.Interval / time.Second),
			ClockSkewWarning:         res.SkewWarning,
		})
	}
}

func parseHeartbeat(body []byte) (*fleet.Heartbeat, error) {
	var req heartbeatRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	hb := &fleet.Heartbeat{
		ID: req.ID, Pool: req.Pool, Status: fleet.State(req.Status),
		Host: req.Host, PID: req.PID, Version: req.Version,
	}
	var err error
	if hb.StartedAt, err = parseTime("started_at", req.StartedAt); err != nil {
		return nil, err
	}
	if hb.SentAt, err = parseTime("sent_at", req.SentAt); err != nil {
		return nil, err
	}
	if len(req.Metrics) > fleet.MaxMetrics {
		return nil, fleet.Errorf(fleet.EINVALID, "metrics", "metrics may have at most %d keys; got %d", fleet.MaxMetrics, len(req.Metrics))
	}
	hb.Metrics = make(map[string]float64, len(req.Metrics))
	for k, raw := range req.Metrics {
		var v float64
		s := strings.TrimSpace(string(raw))
		if s == "" || s == "null" || json.Unmarshal(raw, &v) != nil {
			key := k
			if len(key) > fleet.MaxMetricKey {
				key = key[:fleet.MaxMetricKey]
			}
			return nil, fleet.Errorf(fleet.EINVALID, "metrics."+key, "metrics.%s must be a number; metrics is a flat object of numbers", key)
		}
		hb.Metrics[k] = v
	}
	return hb, nil
}

// parseTime accepts RFC 3339 with a zone offset. A timestamp without one is
// rejected, because reading it in a guessed zone would shift it by hours.
func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err == nil {
		return t.UTC(), nil
	}
	if _, errLocal := time.Parse("2006-01-02T15:04:05.999999999", s); errLocal == nil {
		return time.Time{}, fleet.Errorf(fleet.EINVALID, field, "%s has no time zone; send RFC 3339 with an offset, such as 2026-12-04T10:00:00Z or 2026-12-04T12:00:00+02:00", field)
	}
	return time.Time{}, fleet.Errorf(fleet.EINVALID, field, "%s must be an RFC 3339 timestamp with an offset, such as 2026-12-04T10:00:00Z", field)
}

// workerJSON is a worker in API responses.
type workerJSON struct {
	ID                  string             `json:"id"`
	Pool                string             `json:"pool"`
	Status              fleet.State        `json:"status"`
	DesiredState        fleet.State        `json:"desired_state"`
	Pending             bool               `json:"pending"`
	LastHeartbeatAt     *time.Time         `json:"last_heartbeat_at"`
	HeartbeatAgeSeconds float64            `json:"heartbeat_age_seconds"`
	Stale               bool               `json:"stale"`
	Host                string             `json:"host,omitempty"`
	PID                 int64              `json:"pid,omitempty"`
	Version             string             `json:"version,omitempty"`
	StartedAt           *time.Time         `json:"started_at,omitempty"`
	ClockSkewSeconds    float64            `json:"clock_skew_seconds,omitempty"`
	ClockSkewWarning    bool               `json:"clock_skew_warning,omitempty"`
	Metrics             map[string]float64 `json:"metrics"`
	LastCommand         *commandJSON       `json:"last_command,omitempty"`
}

type commandJSON struct {
	Action string      `json:"action"`
	From   fleet.State `json:"from"`
	To     fleet.State `json:"to"`
	Actor  string      `json:"actor"`
	Source string      `json:"source"`
	Reason string      `json:"reason,omitempty"`
	At     time.Time   `json:"at"`
}

func toWorkerJSON(w *fleet.Worker) workerJSON {
	out := workerJSON{
		ID: w.ID, Pool: w.Pool, Status: w.Status, DesiredState: w.Desired, Pending: w.Pending(),
		HeartbeatAgeSeconds: w.HeartbeatAge.Seconds(), Stale: w.Stale,
		Host: w.Host, PID: w.PID, Version: w.Version,
		ClockSkewSeconds: w.ClockSkew.Seconds(), ClockSkewWarning: w.SkewWarning(),
		Metrics: w.Metrics,
	}
	if !w.LastHeartbeat.IsZero() {
		t := w.LastHeartbeat
		out.LastHeartbeatAt = &t
	}
	if !w.StartedAt.IsZero() {
		t := w.StartedAt
		out.StartedAt = &t
	}
	if out.Metrics == nil {
		out.Metrics = map[string]float64{}
	}
	if cmd := w.LastCommand; cmd != nil {
		out.LastCommand = &commandJSON{Action: string(cmd.Action), From: cmd.From, To: cmd.To, Actor: cmd.Actor, Source: cmd.Source, Reason: cmd.Reason, At: cmd.At}
	}
	return out
}

type workerListJSON struct {
	Workers    []workerJSON `json:"workers"`
	Total      int          `json:"total"`
	Limit      int          `json:"limit"`
	Offset     int          `json:"offset"`
	NextOffset *int         `json:"next_offset"`
}

// parseWorkerFilter reads the list filters from the query string.
func parseWorkerFilter(c *fiber.Ctx) (service.WorkerFilter, error) {
	f := service.WorkerFilter{
		Pool: c.Query("pool"), Status: c.Query("status"), Query: c.Query("q"), Sort: c.Query("sort"),
	}
	var err error
	if f.Limit, err = queryInt(c, "limit", service.DefaultLimit, 1, service.MaxLimit); err != nil {
		return f, err
	}
	if f.Offset, err = queryInt(c, "offset", 0, 0, 1_000_000_000); err != nil {
		return f, err
	}
	if v := c.Query("stale"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, fleet.Errorf(fleet.EINVALID, "stale", "stale must be true or false")
		}
		f.Stale = &b
	}
	return f, f.Validate()
}

// queryInt reads an integer query parameter from min to max, or def when
// it is absent.
func queryInt(c *fiber.Ctx, name string, def, min, max int) (int, error) {
	v := c.Query(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		if max >= 1_000_000_000 {
			return 0, fleet.Errorf(fleet.EINVALID, name, "%s must be a whole number >= %d", name, min)
		}
		return 0, fleet.Errorf(fleet.EINVALID, name, "%s must be a whole number from %d to %d", name, min, max)
	}
	return n, nil
}

func handleListWorkers(svc *service.Service) fiber.Handler {
	return func(c *fiber.Ctx) error {
		f, err := parseWorkerFilter(c)
		if err != nil {
			return err
		}

		page, err := svc.ListWorkers(c.UserContext(), f)
		if err != nil {
			return err
		}

		out := workerListJSON{Workers: make([]workerJSON, 0, len(page.Workers)), Total: page.Total, Limit: page.Limit, Offset: page.Offset}
		for _, w := range page.Workers {
			out.Workers = append(out.Workers, toWorkerJSON(w))
		}
		if next := page.Offset + page.Limit; next < page.Total {
			out.NextOffset = &next
		}
		return c.JSON(out)
	}
}

func handleGetWorker(svc *service.Service) fiber.Handler {
	return func(c *fiber.Ctx) error {
		w, err := svc.Worker(c.UserContext(), c.Params("id"))
		if err != nil {
			return err
		}
		return c.JSON(toWorkerJSON(w))
	}
}

// commandRequest is the optional body of a command: a reason for the audit
// trail.
type commandRequest struct {
	Reason string `json:"reason"`
}

func parseCommand(c *fiber.Ctx) (fleet.Action, string, error) {
	action, err := fleet.ParseAction(c.Params("action"))
	if err != nil {
		return "", "", err
	}
	var req commandRequest
	if len(c.Body()) > 0 && strings.Contains(c.Get(fiber.HeaderContentType), "json") {
		if err := decodeJSON(c.Body(), &req); err != nil {
			return "", "", err
		}
	} else {
		req.Reason = c.FormValue("reason")
	}
	if len(req.Reason) > 500 {
		return "", "", fleet.Errorf(fleet.EINVALID, "reason", "reason must be at most 500 bytes")
	}
	return action, req.Reason, nil
}

func handleWorkerCommand(svc *service.Service, ui *UI) fiber.Handler {
	return func(c *fiber.Ctx) error {
		action, reason, err := parseCommand(c)
		if err != nil {
			return err
		}

		who, source := actor(c)
		w, err := svc.Command(c.UserContext(), c.Params("id"), action, who, source, reason)
		if err != nil {
			return err
		}

		if isHTMX(c) && ui != nil {
			return ui.renderWorkerRow(c, w)
		}
		return c.JSON(toWorkerJSON(w))
	}
}

type poolJSON struct {
	Pool         string         `json:"pool"`
	DesiredCount *int           `json:"desired_count"`
	Live         int            `json:"live"`
	ByStatus     map[string]int `json:"by_status"`
	Stale        int            `json:"stale"`
	// Serving counts live running and paused workers: those that count
	// towards the desired size.
	Serving   int `json:"serving"`
	Surplus   int `json:"surplus"`
	Shortfall int `json:"shortfall"`
}

func toPoolJSON(p *fleet.Pool) poolJSON {
	out := poolJSON{
		Pool: p.Name, Live: p.Live(), Stale: p.Stale, ByStatus: make(map[string]int, len(fleet.States)),
		Serving: p.Serving(), Surplus: p.Surplus(), Shortfall: p.Shortfall(),
	}
	for _, s := range fleet.States {
		out.ByStatus[string(s)] = p.ByStatus[s]
	}
	if p.HasDesired {
		n := p.DesiredCount
		out.DesiredCount = &n
	}
	return out
}

func handleListPools(svc *service.Service) fiber.Handler {
	return func(c *fiber.Ctx) error {
		pools, err := svc.Pools(c.UserContext())
		if err != nil {
			return err
		}
		out := make([]poolJSON, 0, len(pools))
		for _, p := range pools {
			out = append(out, toPoolJSON(p))
		}
		return c.JSON(fiber.Map{"pools": out})
	}
}

func handleGetPool(svc *service.Service) fiber.Handler {
	return func(c *fiber.Ctx) error {
		p, err := svc.Pool(c.UserContext(), c.Params("pool"))
		if err != nil {
			return err
		}
		return c.JSON(toPoolJSON(p))
	}
}

// scaleRequest keeps desired_count raw, so that 2.5, 1e9, "3", true and
// null each get the same message naming the accepted form.
type scaleRequest struct {
	DesiredCount json.RawMessage `json:"desired_count"`
}

func parseScale(c *fiber.Ctx, max int) (int64, error) {
	raw := c.FormValue("desired_count")
	// A JSON body is read as JSON even without its Content-Type, as curl
	// -d sends it.
	body := bytes.TrimSpace(c.Body())
	if strings.Contains(c.Get(fiber.HeaderContentType), "json") || (len(body) > 0 && body[0] == '{') {
		var req scaleRequest
		if err := decodeJSON(c.Body(), &req); err != nil {
			return 0, err
		}
		raw = string(req.DesiredCount)
		if strings.HasPrefix(strings.TrimSpace(raw), `"`) {
			raw = "a string" // a JSON string is not a number, even "3"
		}
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return 0, fleet.Errorf(fleet.EINVALID, "desired_count", "desired_count is required: a whole number from 0 to %d", max)
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, fleet.Errorf(fleet.EINVALID, "desired_count", "desired_count must be a whole number from 0 to %d; got %s", max, truncate(raw, 20))
	}
	return n, fleet.ValidateDesiredCount(n, max)
}

func handleScalePool(svc *service.Service, ui *UI) fiber.Handler {
	return func(c *fiber.Ctx) error {
		pool := c.Params("pool")
		n, err := parseScale(c, svc.MaxDesiredCount())
		if err == nil {
			err = fleet.ValidateName("pool", pool)
		}
		if err != nil {
			if isHTMX(c) && ui != nil && fleet.ErrorCode(err) == fleet.EINVALID {
				return ui.renderScaleError(c, pool, err)
			}
			return err
		}

		who, source := actor(c)
		p, err := svc.Scale(c.UserContext(), pool, n, who, source)
		if err != nil {
			return err
		}

		if isHTMX(c) && ui != nil {
			return ui.renderPoolRow(c, p)
		}
		return c.JSON(toPoolJSON(p))
	}
}

func handlePoolCommand(svc *service.Service, ui *UI) fiber.Handler {
	return func(c *fiber.Ctx) error {
		action, _, err := parseCommand(c)
		if err != nil {
			return err
		}

		who, source := actor(c)
		res, err := svc.PoolCommand(c.UserContext(), c.Params("pool"), action, who, source)
		if err != nil {
			return err
		}

		if isHTMX(c) && ui != nil {
			return ui.renderPoolCommandResult(c, res)
		}
		return c.JSON(fiber.Map{"pool": res.Pool, "action": res.Action, "changed": res.Changed, "skipped": res.Skipped})
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
