package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHeartbeatRequestShape(t *testing.T) {
	started := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	sent := time.Date(2025, 3, 1, 9, 30, 15, 0, time.FixedZone("CET", 3600))

	var gotMethod, gotPath, gotAuth, gotType string
	var gotBody map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotMethod, gotPath = r.Method, r.URL.Path
		gotAuth, gotType = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		if err := json.NewDecoder(r.Body).Decode(&gotBody); err != nil {
			t.Errorf("decode request body: %v", err)
		}
		_, _ = io.WriteString(w, `{"desired_state":"paused","heartbeat_interval_seconds":7,"extra":{"ignored":true}}`)
	}))
	defer srv.Close()

	c := New(srv.URL+"/", "secret-token")
	resp, err := c.Heartbeat(context.Background(), Heartbeat{
		ID: "w-01", Pool: "billing", Status: StatusRunning,
		Host: "h1", PID: 123, Version: "1.2.3",
		StartedAt: started, SentAt: sent,
		Metrics: map[string]float64{"jobs_processed": 1200, "jobs_failed": 12, "busy": 1},
	})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}

	if gotMethod != http.MethodPost {
		t.Errorf("method = %q, want POST", gotMethod)
	}
	if gotPath != "/api/workers/heartbeat" {
		t.Errorf("path = %q, want /api/workers/heartbeat", gotPath)
	}
	if gotAuth != "Bearer secret-token" {
		t.Errorf("Authorization = %q, want %q", gotAuth, "Bearer secret-token")
	}
	if gotType != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", gotType)
	}

	wantFields := map[string]any{
		"id": "w-01", "pool": "billing", "status": "running",
		"host": "h1", "pid": 123.0, "version": "1.2.3",
		"started_at": "2025-03-01T08:00:00Z",
		"sent_at":    "2025-03-01T09:30:15+01:00",
	}
	for key, want := range wantFields {
		if gotBody[key] != want {
			t.Errorf("body[%q] = %v, want %v", key, gotBody[key], want)
		}
	}
	metrics, ok := gotBody["metrics"].(map[string]any)
	if !ok {
		t.Fatalf("body[metrics] = %#v, want an object", gotBody["metrics"])
	}
	if metrics["jobs_processed"] != 1200.0 || metrics["jobs_failed"] != 12.0 || metrics["busy"] != 1.0 {
		t.Errorf("metrics = %v, want jobs_processed 1200, jobs_failed 12, busy 1", metrics)
	}

	if resp.DesiredState != StatusPaused {
		t.Errorf("DesiredState = %q, want paused", resp.DesiredState)
	}
	if resp.HeartbeatInterval != 7*time.Second {
		t.Errorf("HeartbeatInterval = %v, want 7s", resp.HeartbeatInterval)
	}
}

func TestHeartbeatOmitsZeroFields(t *testing.T) {
	var gotBody map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&gotBody)
		_, _ = io.WriteString(w, `{"desired_state":"running"}`)
	}))
	defer srv.Close()

	resp, err := New(srv.URL, "t").Heartbeat(context.Background(), Heartbeat{ID: "w", Pool: "p", Status: StatusRunning})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}

	for _, key := range []string{"started_at", "sent_at", "host", "pid", "version", "metrics"} {
		if _, present := gotBody[key]; present {
			t.Errorf("body contains %q = %v, want it omitted", key, gotBody[key])
		}
	}
	if resp.HeartbeatInterval != 0 {
		t.Errorf("HeartbeatInterval = %v, want 0 when the response has none", resp.HeartbeatInterval)
	}
}

func TestHeartbeatErrorDecoding(t *testing.T) {
	tests := []struct {
		name          string
		status        int
		retryAfter    string
		body          string
		want          APIError
		wantTemporary bool
	}{
		{
			name:   "invalid field",
			status: http.StatusBadRequest,
			body:   `{"error":{"code":"invalid","message":"pool must match [A-Za-z0-9._-]{1,128}","field":"pool"}}`,
			want: APIError{StatusCode: 400, Code: "invalid",
				Message: "pool must match [A-Za-z0-9._-]{1,128}", Field: "pool"},
		},
		{
			name:   "unauthorized",
			status: http.StatusUnauthorized,
			body:   `{"error":{"code":"unauthorized","message":"missing or wrong bearer token"}}`,
			want:   APIError{StatusCode: 401, Code: "unauthorized", Message: "missing or wrong bearer token"},
		},
		{
			name:       "store unavailable",
			status:     http.StatusServiceUnavailable,
			retryAfter: "3",
			body:       `{"error":{"code":"unavailable","message":"state store unavailable"}}`,
			want: APIError{StatusCode: 503, Code: "unavailable", Message: "state store unavailable",
				RetryAfter: 3 * time.Second},
			wantTemporary: true,
		},
		{
			name:          "proxy page",
			status:        http.StatusBadGateway,
			body:          "<html>bad gateway</html>\n<body>...</body>",
			want:          APIError{StatusCode: 502, Message: "<html>bad gateway</html>"},
			wantTemporary: true,
		},
		{
			name:          "empty body",
			status:        http.StatusTooManyRequests,
			want:          APIError{StatusCode: 429, Message: "Too Many Requests"},
			wantTemporary: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()

			_, err := New(srv.URL, "t").Heartbeat(context.Background(), Heartbeat{ID: "w", Pool: "p", Status: "running"})

			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error = %v (%T), want *APIError", err, err)
			}
			if *apiErr != tt.want {
				t.Errorf("APIError = %+v, want %+v", *apiErr, tt.want)
			}
			if apiErr.Temporary() != tt.wantTemporary {
				t.Errorf("Temporary() = %v, want %v", apiErr.Temporary(), tt.wantTemporary)
			}
		})
	}
}

func TestAPIErrorMessage(t *testing.T) {
	err := &APIError{StatusCode: 400, Code: "invalid", Message: "pool is too long", Field: "pool"}
	want := `heartbeat failed with HTTP 400: invalid: pool is too long (field "pool")`
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}

	err = &APIError{StatusCode: 503, Message: "Service Unavailable", RetryAfter: 2 * time.Second}
	want = "heartbeat failed with HTTP 503: Service Unavailable, retry after 2s"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestHeartbeatNetworkErrorIsWrapped(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()

	_, err := New(url, "t").Heartbeat(context.Background(), Heartbeat{ID: "w", Pool: "p", Status: "running"})
	if err == nil {
		t.Fatal("Heartbeat to a closed server returned no error")
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		t.Errorf("error = %v, want a network error, not *APIError", err)
	}
	if !strings.HasPrefix(err.Error(), "send heartbeat: ") {
		t.Errorf("error = %q, want it wrapped with \"send heartbeat: \"", err)
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)

	start := time.Now()
	_, err := New(srv.URL, "t", WithTimeout(50*time.Millisecond)).
		Heartbeat(context.Background(), Heartbeat{ID: "w", Pool: "p", Status: "running"})

	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Heartbeat took %v, want about the 50ms timeout", elapsed)
	}
}

func TestHeartbeatWithHTTPClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"desired_state":"running"}`)
	}))
	defer srv.Close()

	var used bool
	httpClient := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used = true
		return http.DefaultTransport.RoundTrip(r)
	})}

	_, err := New(srv.URL, "t", WithHTTPClient(httpClient)).
		Heartbeat(context.Background(), Heartbeat{ID: "w", Pool: "p", Status: "running"})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if !used {
		t.Error("the client from WithHTTPClient was not used")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHeartbeatBadResponses(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{name: "missing desired state", body: `{"heartbeat_interval_seconds":5}`, want: "desired_state is missing"},
		{name: "not JSON", body: `ok`, want: "decode heartbeat response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()

			_, err := New(srv.URL, "t").Heartbeat(context.Background(), Heartbeat{ID: "w", Pool: "p", Status: "running"})

			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				t.Errorf("error is *APIError, want a plain error for a 200 response")
			}
		})
	}
}

func TestHeartbeatRejectsNaNMetric(t *testing.T) {
	_, err := New("http://127.0.0.1:1", "t").Heartbeat(context.Background(), Heartbeat{
		ID: "w", Pool: "p", Status: "running",
		Metrics: map[string]float64{"memory_mb": math.NaN()},
	})
	if err == nil || !strings.Contains(err.Error(), `metric "memory_mb"`) {
		t.Errorf("error = %v, want one naming metric \"memory_mb\"", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"5", 5 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{"99999999999999", 24 * time.Hour},
		{"Sat, 01 Mar 2025 12:00:30 GMT", 30 * time.Second},
		{"Sat, 01 Mar 2025 11:59:00 GMT", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.value, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.value, got, tt.want)
		}
	}
}
