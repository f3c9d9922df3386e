package static

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"
	"testing/fstest"

	"github.com/gofiber/fiber/v2"
)

const (
	testJS  = "console.log(1);\n"
	testCSS = "body{margin:0}\n"

	wantImmutable = "public, max-age=31536000, immutable"
)

func sha256Prefix(body []byte) string {
	digest := sha256.Sum256(body)
	return hex.EncodeToString(digest[:])[:hashLength]
}

func newTestAssets(t *testing.T) *Assets {
	t.Helper()
	assets, err := load(fstest.MapFS{
		"app.js":      {Data: []byte(testJS)},
		"app.css":     {Data: []byte(testCSS)},
		"logo.xyz":    {Data: []byte("binary")},
		"sub/deep.js": {Data: []byte("nested")},
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return assets
}

func newTestApp(assets *Assets) *fiber.App {
	app := fiber.New()
	app.Get(Route, assets.Handler())
	return app
}

// serve sends a request to app and returns the response with its body read.
func serve(t *testing.T, app *fiber.App, method, target string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for key, value := range header {
		req.Header.Set(key, value)
	}

	resp, err := app.Test(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return resp, string(body)
}

func TestNewHashesEmbeddedFiles(t *testing.T) {
	assets, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}

	for _, name := range []string{"app.js", "app.css"} {
		onDisk, err := os.ReadFile("dist/" + name)
		if err != nil {
			t.Fatalf("read dist/%s (run npm run build): %v", name, err)
		}

		want := URLPrefix + name + "?v=" + sha256Prefix(onDisk)
		if got := assets.Path(name); got != want {
			t.Errorf("Path(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestPathFormat(t *testing.T) {
	assets := newTestAssets(t)

	got := assets.Path("app.js")
	pattern := regexp.MustCompile(`^/verifier-engine-room/static/app\.js\?v=[0-9a-f]{12}$`)
	if !pattern.MatchString(got) {
		t.Errorf("Path(app.js) = %q, want match for %s", got, pattern)
	}

	want := URLPrefix + "app.js?v=" + sha256Prefix([]byte(testJS))
	if got != want {
		t.Errorf("Path(app.js) = %q, want %q", got, want)
	}
}

func TestPathUnknownName(t *testing.T) {
	assets := newTestAssets(t)

	for _, name := range []string{"missing.js", "sub/deep.js", ""} {
		if got, want := assets.Path(name), URLPrefix+name; got != want {
			t.Errorf("Path(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestHandlerCurrentVersionImmutable(t *testing.T) {
	assets := newTestAssets(t)
	app := newTestApp(assets)

	resp, body := serve(t, app, http.MethodGet, assets.Path("app.js"), nil)

	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if body != testJS {
		t.Errorf("body = %q, want %q", body, testJS)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/javascript; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/javascript; charset=utf-8", got)
	}
	if got := resp.Header.Get("Cache-Control"); got != wantImmutable {
		t.Errorf("Cache-Control = %q, want %q", got, wantImmutable)
	}
	if got, want := resp.Header.Get("ETag"), `"`+sha256Prefix([]byte(testJS))+`"`; got != want {
		t.Errorf("ETag = %q, want %q", got, want)
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
	}
}

func TestHandlerContentTypes(t *testing.T) {
	assets := newTestAssets(t)
	app := newTestApp(assets)

	cases := map[string]string{
		"app.js":   "text/javascript; charset=utf-8",
		"app.css":  "text/css; charset=utf-8",
		"logo.xyz": "application/octet-stream",
	}
	for name, want := range cases {
		resp, _ := serve(t, app, http.MethodGet, URLPrefix+name, nil)
		if got := resp.Header.Get("Content-Type"); got != want {
			t.Errorf("%s: Content-Type = %q, want %q", name, got, want)
		}
	}
}

func TestHandlerWithoutCurrentVersion(t *testing.T) {
	assets := newTestAssets(t)
	app := newTestApp(assets)

	targets := []string{
		URLPrefix + "app.css",
		URLPrefix + "app.css?v=",
		URLPrefix + "app.css?v=000000000000",
		URLPrefix + "app.css?other=" + sha256Prefix([]byte(testCSS)),
	}
	for _, target := range targets {
		resp, body := serve(t, app, http.MethodGet, target, nil)

		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status = %d, want 200", target, resp.StatusCode)
		}
		if body != testCSS {
			t.Errorf("%s: body = %q, want %q", target, body, testCSS)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("%s: Cache-Control = %q, want no-cache", target, got)
		}
		if got, want := resp.Header.Get("ETag"), `"`+sha256Prefix([]byte(testCSS))+`"`; got != want {
			t.Errorf("%s: ETag = %q, want %q", target, got, want)
		}
	}
}

func TestHandlerIfNoneMatch(t *testing.T) {
	assets := newTestAssets(t)
	app := newTestApp(assets)
	hash := sha256Prefix([]byte(testJS))

	cases := []struct {
		ifNoneMatch string
		wantStatus  int
	}{
		{`"` + hash + `"`, http.StatusNotModified},
		{`W/"` + hash + `"`, http.StatusNotModified},
		{`"aaaaaaaaaaaa", "` + hash + `"`, http.StatusNotModified},
		{`*`, http.StatusNotModified},
		{`"aaaaaaaaaaaa"`, http.StatusOK},
		{hash, http.StatusOK},
		{``, http.StatusOK},
	}
	for _, tc := range cases {
		header := map[string]string{"If-None-Match": tc.ifNoneMatch}
		resp, body := serve(t, app, http.MethodGet, assets.Path("app.js"), header)

		if resp.StatusCode != tc.wantStatus {
			t.Errorf("If-None-Match %s: status = %d, want %d", tc.ifNoneMatch, resp.StatusCode, tc.wantStatus)
			continue
		}
		if tc.wantStatus == http.StatusNotModified && body != "" {
			t.Errorf("If-None-Match %s: 304 body = %q, want empty", tc.ifNoneMatch, body)
		}
		if got, want := resp.Header.Get("ETag"), `"`+hash+`"`; got != want {
			t.Errorf("If-None-Match %s: ETag = %q, want %q", tc.ifNoneMatch, got, want)
		}
		if got := resp.Header.Get("Cache-Control"); got != wantImmutable {
			t.Errorf("If-None-Match %s: Cache-Control = %q, want %q", tc.ifNoneMatch, got, wantImmutable)
		}
	}
}

func TestHandlerHead(t *testing.T) {
	assets := newTestAssets(t)
	app := newTestApp(assets)

	resp, body := serve(t, app, http.MethodHead, assets.Path("app.css"), nil)

	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if body != "" {
		t.Errorf("HEAD body = %q, want empty", body)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/css; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/css; charset=utf-8", got)
	}
}

func TestHandlerUnknownName(t *testing.T) {
	assets := newTestAssets(t)
	app := newTestApp(assets)

	for _, name := range []string{"missing.js", "sub%2Fdeep.js", "..%2Fstatic.go"} {
		resp, body := serve(t, app, http.MethodGet, URLPrefix+name+"?v=abc", nil)

		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: status = %d, want 404", name, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("%s: Content-Type = %q, want application/json", name, got)
		}

		var decoded struct {
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &decoded); err != nil {
			t.Fatalf("%s: body %q is not JSON: %v", name, body, err)
		}
		if code := decoded.Error["code"]; code != "not_found" {
			t.Errorf("%s: error.code = %#v, want \"not_found\" (body %s)", name, code, body)
		}
		if message, _ := decoded.Error["message"].(string); message == "" {
			t.Errorf("%s: error.message missing or empty (body %s)", name, body)
		}
		if field, ok := decoded.Error["field"]; !ok || field != "" {
			t.Errorf("%s: error.field = %#v, want \"\" (body %s)", name, field, body)
		}
	}
}

func TestHandlerServesEmbeddedBuild(t *testing.T) {
	assets, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	app := newTestApp(assets)

	for _, name := range []string{"app.js", "app.css"} {
		onDisk, err := os.ReadFile("dist/" + name)
		if err != nil {
			t.Fatalf("read dist/%s: %v", name, err)
		}

		resp, body := serve(t, app, http.MethodGet, assets.Path(name), nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status = %d, want 200", name, resp.StatusCode)
		}
		if body != string(onDisk) {
			t.Errorf("%s: body differs from dist/%s (%d bytes, want %d)", name, name, len(body), len(onDisk))
		}
		if got := resp.Header.Get("Cache-Control"); got != wantImmutable {
			t.Errorf("%s: Cache-Control = %q, want %q", name, got, wantImmutable)
		}
	}
}
