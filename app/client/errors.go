package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxErrorBytes limits how much of an error body is read and decoded.
const maxErrorBytes = 64 << 10

// maxMessageRunes limits the length of a Message taken from a body that is
// not the control plane's JSON error, such as a proxy's HTML error page.
const maxMessageRunes = 200

// APIError is a heartbeat response with a status other than 2xx.
type APIError struct {
	// StatusCode is the HTTP status, for example 400, 401 or 503.
	StatusCode int

	// Code, Message and Field come from the control plane's JSON error body
	// {"error":{"code":...,"message":...,"field":...}}. Code is a short
	// machine-readable kind such as "invalid" or "unauthorized", and Field
	// names the rejected heartbeat field when there is one. When the body
	// is not that JSON (for example a proxy's error page), Code and Field
	// are empty and Message is the start of the body or the status text.
	Code    string
	Message string
	Field   string

	// RetryAfter is the delay from the Retry-After header, or 0 when the
	// response had none. The control plane sends it with 503 when its state
	// store is unavailable.
	RetryAfter time.Duration
}

// Error returns the status, code, message and field in one line.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "heartbeat failed with HTTP %d", e.StatusCode)
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, " (field %q)", e.Field)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	return b.String()
}

// Temporary reports whether sending the same heartbeat again may succeed:
// true for 429 Too Many Requests and every 5xx status, false for other 4xx
// statuses such as 400 (invalid heartbeat) and 401 (wrong token).
func (e *APIError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// errorBody is the wire form of the control plane's error response.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func newAPIError(res *http.Response) *APIError {
	apiErr := &APIError{
		StatusCode: res.StatusCode,
		RetryAfter: parseRetryAfter(res.Header.Get("Retry-After"), time.Now()),
	}

	raw, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBytes))
	var body errorBody
	if json.Unmarshal(raw, &body) == nil && (body.Error.Code != "" || body.Error.Message != "") {
		apiErr.Code = body.Error.Code
		apiErr.Message = body.Error.Message
		apiErr.Field = body.Error.Field
		return apiErr
	}

	apiErr.Message = summarize(raw)
	if apiErr.Message == "" {
		apiErr.Message = http.StatusText(res.StatusCode)
	}
	return apiErr
}

// parseRetryAfter returns the delay of a Retry-After header, which is either
// a number of seconds or an HTTP date (RFC 9110). It returns
// 0 for an empty, malformed or past value.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil {
		if seconds <= 0 {
			return 0
		}
		// Cap the value so that the conversion to Duration cannot overflow.
		const maxSeconds = int64(24 * time.Hour / time.Second)
		return time.Duration(min(seconds, maxSeconds)) * time.Second
	}
	if date, err := http.ParseTime(value); err == nil && date.After(now) {
		return date.Sub(now)
	}
	return 0
}

// summarize returns the first line of a non-JSON error body, shortened to
// maxMessageRunes and with invalid UTF-8 replaced.
func summarize(raw []byte) string {
	text := strings.ToValidUTF8(string(raw), "\uFFFD")
	text = strings.TrimSpace(text)
	if line, _, found := strings.Cut(text, "\n"); found {
		text = strings.TrimSpace(line)
	}
	if utf8.RuneCountInString(text) > maxMessageRunes {
		text = string([]rune(text)[:maxMessageRunes]) + "…"
	}
	return text
}
