// Package client sends worker heartbeats to the control plane.
//
// A worker calls [Client.Heartbeat] every few seconds with its status and
// metrics. The response carries the state the operator wants (running,
// paused, draining or stopped) and the heartbeat interval to use. Most
// workers embed a [Worker], which runs that loop with jitter, Retry-After
// and exponential backoff:
//
//	c := client.New("https://control-plane.example", os.Getenv("CONTROL_PLANE_TOKEN"))
//	w := &client.Worker{Client: c, ID: "w-01", Pool: "billing"}
//	err := w.Run(ctx, reportStatus, obeyDesiredState)
//
// The package uses only the standard library.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
)

// Worker statuses and desired states. The control plane accepts these four
// values in a heartbeat's status and returns one of them as the desired state.
const (
	StatusRunning  = "running"
	StatusPaused   = "paused"
	StatusDraining = "draining"
	StatusStopped  = "stopped"
)

// HeartbeatPath is the path of the heartbeat endpoint below the base URL.
const HeartbeatPath = "/api/workers/heartbeat"

// DefaultTimeout is the per-request timeout of a Client built without
// [WithTimeout].
const DefaultTimeout = 5 * time.Second

// maxResponseBytes limits how much of a response body the client reads, so a
// misbehaving server or proxy cannot make a worker buffer without bound.
const maxResponseBytes = 1 << 20

// Client sends heartbeats to one control plane. It is safe for concurrent use.
type Client struct {
	heartbeatURL  string
	authorization string
	httpClient    *http.Client
	timeout       time.Duration
}

// Option configures a Client in [New].
type Option func(*Client)

// WithHTTPClient sets the HTTP client used for requests, for example one with
// a custom Transport or TLS configuration. The default, also kept when
// httpClient is nil, is a client on [http.DefaultTransport].
func WithHTTPClient(httpClient *http.Client) Option {
	return func(c *Client) {
		if httpClient != nil {
			c.httpClient = httpClient
		}
	}
}

// WithTimeout sets the timeout of each heartbeat request, including reading
// the response. The default is [DefaultTimeout], and d <= 0 disables it, so
// only the caller's context limits a request.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) {
		c.timeout = d
	}
}

// New returns a Client for the control plane at baseURL (for example
// "http://127.0.0.1:8080"; a trailing slash is ignored) that authenticates
// with the bearer token. New does not contact the server, so a malformed URL
// is reported by the first request.
func New(baseURL, token string, opts ...Option) *Client {
	c := &Client{
		heartbeatURL:  strings.TrimRight(baseURL, "/") + HeartbeatPath,
		authorization: "Bearer " + token,
		httpClient:    &http.Client{},
		timeout:       DefaultTimeout,
	}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// Heartbeat is the body of one heartbeat request. Host, PID, Version, the
// times and Metrics are optional and left out of the JSON when zero.
type Heartbeat struct {
	// ID and Pool must match [A-Za-z0-9._-]{1,128}.
	ID   string `json:"id"`
	Pool string `json:"pool"`

	// Status is the state the worker is actually in: one of StatusRunning,
	// StatusPaused, StatusDraining or StatusStopped.
	Status string `json:"status"`

	Host    string `json:"host,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Version string `json:"version,omitempty"`

	// StartedAt is when the worker process started, and SentAt when the
	// heartbeat was sent. Both are encoded in RFC 3339 with the time zone.
	// The control plane orders events by its own clock, so SentAt only
	// helps to spot clock skew.
	StartedAt time.Time `json:"started_at,omitzero"`
	SentAt    time.Time `json:"sent_at,omitzero"`

	// Metrics is a flat set of numbers. The control plane treats
	// jobs_processed and jobs_failed as cumulative counters since the worker
	// started, and other keys (busy, memory_mb, queue_depth, custom ones)
	// as gauges. NaN and infinities are rejected because JSON cannot
	// encode them.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Response is the decoded 2xx response to a heartbeat.
type Response struct {
	// DesiredState is the state the operator wants the worker in. It is
	// normally one of the four Status constants, and the client passes any
	// other value through unchanged so that a worker can ignore a state it
	// does not know.
	DesiredState string

	// HeartbeatInterval is how often the server wants heartbeats, or 0 when
	// the response did not carry a positive interval.
	HeartbeatInterval time.Duration
}

// responseBody is the wire form of Response. Unknown fields are ignored so
// that the server can add fields without breaking older workers.
type responseBody struct {
	DesiredState    string  `json:"desired_state"`
	IntervalSeconds float64 `json:"heartbeat_interval_seconds"`
}

// Heartbeat sends one heartbeat and returns the desired state and interval
// from the response.
//
// A response with a status other than 2xx is returned as an *[APIError],
// decoded from the JSON error body when there is one. Errors from encoding
// the body, from the network (connection refused, timeouts, the context
// ending) and from decoding a 2xx response are returned wrapped, never as an
// *APIError; a caller that retries should treat them as temporary.
func (c *Client) Heartbeat(ctx context.Context, hb Heartbeat) (Response, error) {
	body, err := encodeHeartbeat(hb)
	if err != nil {
		return Response{}, err
	}

	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.heartbeatURL, bytes.NewReader(body))
	if err != nil {
		return Response{}, fmt.Errorf("build heartbeat request: %w", err)
	}
	req.Header.Set("Authorization", c.authorization)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")

	res, err := c.httpClient.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("send heartbeat: %w", err)
	}
	defer closeBody(res.Body)

	if res.StatusCode < 200 || res.StatusCode > 299 {
		return Response{}, newAPIError(res)
	}
	return decodeResponse(res.Body)
}

func encodeHeartbeat(hb Heartbeat) ([]byte, error) {
	for name, value := range hb.Metrics {
		if math.IsNaN(value) || math.IsInf(value, 0) {
			return nil, fmt.Errorf("encode heartbeat: metric %q is %v, which JSON cannot encode", name, value)
		}
	}
	body, err := json.Marshal(hb)
	if err != nil {
		return nil, fmt.Errorf("encode heartbeat: %w", err)
	}
	return body, nil
}

func decodeResponse(body io.Reader) (Response, error) {
	var wire responseBody
	if err := json.NewDecoder(io.LimitReader(body, maxResponseBytes)).Decode(&wire); err != nil {
		return Response{}, fmt.Errorf("decode heartbeat response: %w", err)
	}
	if wire.DesiredState == "" {
		return Response{}, fmt.Errorf("decode heartbeat response: desired_state is missing")
	}

	resp := Response{DesiredState: wire.DesiredState}
	switch seconds := wire.IntervalSeconds; {
	case seconds <= 0:
		// No interval: the caller keeps its current one.
	case seconds >= math.MaxInt64/float64(time.Second):
		resp.HeartbeatInterval = time.Duration(math.MaxInt64)
	default:
		resp.HeartbeatInterval = time.Duration(seconds * float64(time.Second))
	}
	return resp, nil
}

// closeBody reads the rest of a response body before closing it, so that the
// Transport can reuse the keep-alive connection.
func closeBody(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxResponseBytes))
	_ = body.Close()
}
