// Package static serves the dashboard's built CSS and JavaScript from files
// embedded in the binary, with content-hash URLs for long-lived caching.
//
// The files in dist are built from static/src by `npm run build` and
// committed, so `go build` needs no Node.js toolchain.
package static

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"path"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// URLPrefix is the URL path under which Handler serves the assets.
const URLPrefix = "/verifier-engine-room/static/"

// Route is the Fiber route pattern to register Handler on.
const Route = URLPrefix + ":name"

// hashLength is the number of hex digits of the SHA-256 digest used as the
// version of an asset.
const hashLength = 12

const (
	cacheImmutable  = "public, max-age=31536000, immutable"
	cacheRevalidate = "no-cache"
)

//go:embed dist
var dist embed.FS

// contentTypes fixes the Content-Type of the types the build writes, because
// mime.TypeByExtension also reads the host's mime.types files, which differ
// between machines.
var contentTypes = map[string]string{
	".css":   "text/css; charset=utf-8",
	".js":    "text/javascript; charset=utf-8",
	".json":  "application/json",
	".map":   "application/json",
	".svg":   "image/svg+xml",
	".png":   "image/png",
	".ico":   "image/x-icon",
	".woff2": "font/woff2",
	".txt":   "text/plain; charset=utf-8",
}

// Assets is the set of embedded asset files with their content hashes.
// It is read-only after New, so it is safe for concurrent use.
type Assets struct {
	files map[string]asset
}

type asset struct {
	body        []byte
	hash        string
	contentType string
}

// New loads and hashes every file at the top level of the embedded dist
// directory. Subdirectories are skipped, because Route matches a single
// path segment.
func New() (*Assets, error) {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, fmt.Errorf("open embedded dist: %w", err)
	}
	return load(sub)
}

// load reads the top-level files of fsys. Tests call it with an in-memory
// file system.
func load(fsys fs.FS) (*Assets, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("list static assets: %w", err)
	}

	files := make(map[string]asset, len(entries))
	for _, entry := range entries {
		if !entry.Type().IsRegular() {
			continue
		}

		name := entry.Name()
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read static asset %q: %w", name, err)
		}

		digest := sha256.Sum256(body)
		files[name] = asset{
			body:        body,
			hash:        hex.EncodeToString(digest[:])[:hashLength],
			contentType: contentType(name),
		}
	}

	return &Assets{files: files}, nil
}

func contentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if value, ok := contentTypes[ext]; ok {
		return value
	}
	if value := mime.TypeByExtension(ext); value != "" {
		return value
	}
	return "application/octet-stream"
}

// Path returns the URL of the named asset with its content hash as the v
// query parameter, for example
// "/verifier-engine-room/static/app.css?v=0123456789ab". For a name that is
// not embedded it returns the URL without v, for which Handler returns 404.
func (a *Assets) Path(name string) string {
	file, ok := a.files[name]
	if !ok {
		return URLPrefix + name
	}
	return URLPrefix + name + "?v=" + file.hash
}

// Handler returns a handler for Route that serves the embedded file named by
// the :name parameter.
//
// A request whose v query parameter equals the file's current hash may be
// cached for a year, because that URL never serves other content. Any other
// request gets Cache-Control: no-cache, so a page from an older release
// still gets the current file and revalidates it each time. The ETag is the
// quoted hash, and a matching If-None-Match gets 304 Not Modified. An
// unknown name gets 404 with a JSON error body.
func (a *Assets) Handler() fiber.Handler {
	return func(c *fiber.Ctx) error {
		name := c.Params("name")
		file, ok := a.files[name]
		if !ok {
			return c.Status(fiber.StatusNotFound).JSON(errorResponse{Error: errorBody{
				Code:    "not_found",
				Message: fmt.Sprintf("static asset %q not found", name),
			}})
		}

		etag := `"` + file.hash + `"`
		c.Set(fiber.HeaderETag, etag)
		if c.Query("v") == file.hash {
			c.Set(fiber.HeaderCacheControl, cacheImmutable)
		} else {
			c.Set(fiber.HeaderCacheControl, cacheRevalidate)
		}
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")

		if etagMatches(c.Get(fiber.HeaderIfNoneMatch), file.hash) {
			c.Status(fiber.StatusNotModified)
			return nil
		}

		c.Set(fiber.HeaderContentType, file.contentType)
		return c.Send(file.body)
	}
}

// etagMatches reports whether an If-None-Match header value matches hash.
// Like net/http's ServeContent it compares weakly, so W/"hash" also
// matches, and "*" matches any file.
func etagMatches(header, hash string) bool {
	for _, candidate := range strings.Split(header, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" {
			return true
		}
		candidate = strings.TrimPrefix(candidate, "W/")
		if candidate == `"`+hash+`"` {
			return true
		}
	}
	return false
}

// errorResponse is the JSON error shape the whole API uses.
type errorResponse struct {
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field"`
}
