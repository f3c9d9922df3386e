package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/metrics"
)

// errorBody is the JSON form of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}

var statusByCode = map[string]int{
	fleet.EINVALID:     fiber.StatusBadRequest,
	fleet.EUNAUTH:      fiber.StatusUnauthorized,
	fleet.EFORBIDDEN:   fiber.StatusForbidden,
	fleet.ENOTFOUND:    fiber.StatusNotFound,
	fleet.ECONFLICT:    fiber.StatusConflict,
	fleet.ETOOLARGE:    fiber.StatusRequestEntityTooLarge,
	fleet.EMETHOD:      fiber.StatusMethodNotAllowed,
	fleet.ETIMEOUT:     fiber.StatusRequestTimeout,
	fleet.EUNAVAILABLE: fiber.StatusServiceUnavailable,
	fleet.EINTERNAL:    fiber.StatusInternalServerError,
}

// errorHandler is the one exit for every error: it maps the error's code to
// a status, responds with JSON (or an inline fragment for htmx requests), counts
// it, and logs only internal failures.
func errorHandler(m *metrics.Metrics, log *slog.Logger, bodyLimit int, retryAfter int) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		e := toUserError(err, bodyLimit)
		status := statusByCode[e.Code]
		if status == 0 {
			status = fiber.StatusInternalServerError
		}
		m.Errors.WithLabelValues(e.Code).Inc()
		switch e.Code {
		case fleet.EINTERNAL:
			log.Error("request failed", "method", c.Method(), "route", c.Route().Path, "err", err)
		case fleet.EUNAVAILABLE:
			dep := e.Dependency
			if dep == "" {
				dep = "redis"
			}
			m.DependencyFailures.WithLabelValues(dep).Inc()
			log.Warn("dependency unavailable", "dependency", dep, "method", c.Method(), "route", c.Route().Path, "err", err)
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(retryAfter))
		}
		if isHTMX(c) {
			return renderInlineError(c, status, e)
		}
		return c.Status(status).JSON(errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, Field: e.Field}})
	}
}

// toUserError turns any error into a *fleet.Error with a message fit for the
// user.
func toUserError(err error, bodyLimit int) *fleet.Error {
	var fe *fleet.Error
	if errors.As(err, &fe) {
		if fe.Code == fleet.EINTERNAL || fe.Code == fleet.EUNAVAILABLE {
			return &fleet.Error{Code: fe.Code, Message: fe.Message, Dependency: fe.Dependency}
		}
		return fe
	}
	var fiberErr *fiber.Error
	if errors.As(err, &fiberErr) {
		switch fiberErr.Code {
		case fiber.StatusNotFound:
			return fleet.Errorf(fleet.ENOTFOUND, "", "no such endpoint: %s", fiberErr.Message)
		case fiber.StatusMethodNotAllowed:
			return fleet.Errorf(fleet.EMETHOD, "", "method not allowed on this endpoint; the Allow header lists the accepted ones")
		case fiber.StatusRequestTimeout:
			return fleet.Errorf(fleet.ETIMEOUT, "", "the request was not received within the read timeout")
		case fiber.StatusRequestEntityTooLarge:
			return fleet.Errorf(fleet.ETOOLARGE, "body", "request body must be at most %d bytes", bodyLimit)
		}
		if fiberErr.Code >= 400 && fiberErr.Code < 500 {
			return fleet.Errorf(fleet.EINVALID, "", "%s", fiberErr.Message)
		}
	}
	return &fleet.Error{Code: fleet.EINTERNAL, Message: "internal error; the server logged the cause"}
}

// decodeJSON decodes a request body into v and turns decoding failures into
// EINVALID errors that name the field and the expected type.
func decodeJSON(body []byte, v any) error {
	if len(body) == 0 {
		return fleet.Errorf(fleet.EINVALID, "body", "request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax):
			return fleet.Errorf(fleet.EINVALID, "body", "malformed JSON at byte %d: %v", syntax.Offset, err)
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				return fleet.Errorf(fleet.EINVALID, "body", "request body must be a JSON object")
			}
			return fleet.Errorf(fleet.EINVALID, field, "%s must be %s, not a JSON %s", field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
		default:
			return fleet.Errorf(fleet.EINVALID, "body", "malformed JSON: %v", err)
		}
	}
	return nil
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int", "int64", "int32":
		return "a whole number"
	case "float64", "float32":
		return "a number"
	case "map", "struct":
		return "a JSON object"
	case "bool":
		return "true or false"
	}
	return fmt.Sprintf("of type %s", kind)
}
