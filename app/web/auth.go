package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
	"unicode"

	"github.com/gofiber/fiber/v2"

	"github.com/verifier/controlplane/app/fleet"
)

// Locals keys set by the auth middleware.
const (
	localActor  = "actor"
	localSource = "source"
)

// Challenges sent with a 401: browsers show a login prompt for Basic.
const (
	challengeBasic  = `Basic realm="control plane", charset="UTF-8"`
	challengeBearer = `Bearer realm="control plane"`
)

// requireToken accepts "Authorization: Bearer <token>", or HTTP Basic with
// any username and the token as password. It compares SHA-256 digests in
// constant time, so neither the token nor its length leaks through timing.
// The actor recorded in the audit trail is the Basic username, or "api".
func requireToken(token, challenge string) fiber.Handler {
	want := sha256.Sum256([]byte(token))
	matches := func(got string) bool {
		sum := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	}
	return func(c *fiber.Ctx) error {
		header := c.Get(fiber.HeaderAuthorization)
		scheme, credentials, _ := strings.Cut(header, " ")
		switch strings.ToLower(scheme) {
		case "bearer":
			if matches(strings.TrimSpace(credentials)) {
				c.Locals(localActor, "api")
				c.Locals(localSource, fleet.SourceAPI)
				return c.Next()
			}
		case "basic":
			raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(credentials))
			if err == nil {
				user, pass, _ := strings.Cut(string(raw), ":")
				if matches(pass) {
					c.Locals(localActor, actorName(user))
					c.Locals(localSource, fleet.SourceUI)
					return c.Next()
				}
			}
		}
		c.Set(fiber.HeaderWWWAuthenticate, challenge)
		return fleet.Errorf(fleet.EUNAUTH, "", "missing or invalid token: send Authorization: Bearer <CONTROL_PLANE_TOKEN>")
	}
}

// actorName returns a Basic-auth username fit for the audit trail.
func actorName(user string) string {
	user = strings.TrimSpace(user)
	if user == "" || len(user) > 64 || strings.IndexFunc(user, unicode.IsControl) >= 0 {
		return "operator"
	}
	return user
}

func actor(c *fiber.Ctx) (name, source string) {
	name, _ = c.Locals(localActor).(string)
	source, _ = c.Locals(localSource).(string)
	return name, source
}
