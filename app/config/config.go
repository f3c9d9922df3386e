// Package config loads the control plane's configuration from the
// environment (and a .env file, which the real environment overrides) and
// validates it once, reporting every bad variable at once.
package config

import (
	"crypto/rand"
	"encoding/hex"

	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Config is the whole configuration. Zero values are never used: Load fills
// every field from the environment or its documented default.
type Config struct {
	// Token is the shared secret (CONTROL_PLANE_TOKEN). When unset, Load
	// generates one for this run and sets TokenGenerated.
	Token          string
	TokenGenerated bool

	HTTPAddr  string // HTTP_ADDR, default ":8080"
	PublicURL string // PUBLIC_URL, base URL for links in alerts; may be empty

	// RedisAddrs is empty for the embedded in-process Redis; several
	// addresses mean Cluster seeds, or Sentinels with RedisMasterName.
	RedisAddrs      []string
	RedisPassword   string
	RedisDB         int
	RedisMasterName string
	// RedisCluster is set for Redis Cluster: by REDIS_CLUSTER=true (needed
	// with a single configuration endpoint), or by several addresses
	// without a master name.
	RedisCluster  bool
	RedisPoolSize int           // REDIS_POOL_SIZE, default 10 per CPU as go-redis does
	RedisTimeout  time.Duration // REDIS_TIMEOUT_MS, deadline of one Redis call, default 500 ms

	MySQLDSN          string
	SnapshotInterval  time.Duration // SNAPSHOT_INTERVAL_SECONDS, default 60 s
	SnapshotRetention time.Duration // SNAPSHOT_RETENTION_DAYS, default 30 days

	HeartbeatInterval time.Duration // HEARTBEAT_INTERVAL_SECONDS, default 5 s, sent to workers
	// WorkerRetention is how long a silent worker's keys live and when it
	// leaves the active set (WORKER_RETENTION_HOURS, default 24 h).
	WorkerRetention time.Duration
	MaxDesiredCount int // POOL_MAX_DESIRED_COUNT, default 1000
	// MetricsMaxPools caps the pool label values in /metrics
	// (METRICS_MAX_POOLS, default 100); the rest are summed as pool="(other)".
	MetricsMaxPools int

	Alerts Alerts

	SlackWebhookURL string
	SMTP            SMTP

	// ShutdownDelay is how long the server keeps serving after /readyz turns
	// unready on SIGTERM, so load balancers stop sending it requests first
	// (SHUTDOWN_DELAY_SECONDS, default 0; 5 suits Kubernetes).
	ShutdownDelay time.Duration

	LogLevel  string // LOG_LEVEL: debug, info, warn, error; default info
	LogFormat string // LOG_FORMAT: text or json; default text
}

// Alerts holds the alerting defaults; the Settings page can override them at
// run time.
type Alerts struct {
	Enabled            bool          // ALERTS_ENABLED, default false
	CheckInterval      time.Duration // ALERT_CHECK_INTERVAL_SECONDS, default 15 s
	HeartbeatGrace     time.Duration // ALERT_HEARTBEAT_GRACE_SECONDS, default 30 s
	Cooldown           time.Duration // ALERT_COOLDOWN_SECONDS, default 900 s
	ErrorRateThreshold float64       // ALERT_ERROR_RATE_THRESHOLD, percent, default 10
	MinJobs            int           // ALERT_MIN_JOBS, default 20
	AutoActions        bool          // AUTO_ACTIONS_ENABLED, default false
}

// SMTP configures email alerts; Host empty disables email.
type SMTP struct {
	Host     string
	Port     int
	Username string
	Password string
	From     string
	To       []string
	TLS      string // tls, starttls, opportunistic or none
}

// Load reads every variable through getenv, applies defaults and returns all
// problems at once, one line per variable with the accepted form.
func Load(getenv func(string) string) (Config, error) {
	p := parser{getenv: getenv}
	c := Config{
		Token:     getenv("CONTROL_PLANE_TOKEN"),
		HTTPAddr:  p.str("HTTP_ADDR", ":8080"),
		PublicURL: strings.TrimRight(getenv("PUBLIC_URL"), "/"),

		RedisPassword:   getenv("REDIS_PASSWORD"),
		RedisDB:         p.integer("REDIS_DB", 0, 0, 1<<20, "a database number >= 0"),
		RedisMasterName: getenv("REDIS_MASTER_NAME"),
		RedisPoolSize:   p.integer("REDIS_POOL_SIZE", 0, 0, 10000, "a whole number of connections from 1 to 10000, or 0 for go-redis' default"),
		RedisTimeout:    p.millis("REDIS_TIMEOUT_MS", 500*time.Millisecond, 10, 60_000),

		MySQLDSN:          getenv("MYSQL_DSN"),
		SnapshotInterval:  p.seconds("SNAPSHOT_INTERVAL_SECONDS", 60*time.Second, 5, 86400),
		SnapshotRetention: time.Duration(p.integer("SNAPSHOT_RETENTION_DAYS", 30, 1, 3650, "a whole number of days from 1 to 3650")) * 24 * time.Hour,

		HeartbeatInterval: p.seconds("HEARTBEAT_INTERVAL_SECONDS", 5*time.Second, 1, 3600),
		WorkerRetention:   time.Duration(p.integer("WORKER_RETENTION_HOURS", 24, 1, 24*365, "a whole number of hours from 1 to 8760")) * time.Hour,
		MaxDesiredCount:   p.integer("POOL_MAX_DESIRED_COUNT", 1000, 1, 1_000_000, "a whole number from 1 to 1000000"),
		MetricsMaxPools:   p.integer("METRICS_MAX_POOLS", 100, 1, 10000, "a whole number from 1 to 10000"),

		Alerts: Alerts{
			Enabled:            p.boolean("ALERTS_ENABLED", false),
			CheckInterval:      p.seconds("ALERT_CHECK_INTERVAL_SECONDS", 15*time.Second, 1, 3600),
			HeartbeatGrace:     p.seconds("ALERT_HEARTBEAT_GRACE_SECONDS", 30*time.Second, 1, 86400),
			Cooldown:           p.seconds("ALERT_COOLDOWN_SECONDS", 900*time.Second, 0, 7*86400),
			ErrorRateThreshold: p.percent("ALERT_ERROR_RATE_THRESHOLD", 10),
			MinJobs:            p.integer("ALERT_MIN_JOBS", 20, 1, 1_000_000, "a whole number from 1 to 1000000"),
			AutoActions:        p.boolean("AUTO_ACTIONS_ENABLED", false),
		},

		ShutdownDelay: p.seconds("SHUTDOWN_DELAY_SECONDS", 0, 0, 300),

		SlackWebhookURL: getenv("SLACK_WEBHOOK_URL"),
		LogLevel:        strings.ToLower(p.str("LOG_LEVEL", "info")),
		LogFormat:       strings.ToLower(p.str("LOG_FORMAT", "text")),
	}

	if addr := strings.TrimSpace(getenv("REDIS_ADDR")); addr != "" {
		for _, a := range strings.Split(addr, ",") {
			a = strings.TrimSpace(a)
			if _, _, err := net.SplitHostPort(a); err != nil || a == "" {
				p.fail("REDIS_ADDR", "must be host:port, or a comma-separated list of host:port; got %q", a)
			}
			c.RedisAddrs = append(c.RedisAddrs, a)
		}
	}
	if c.RedisMasterName != "" && len(c.RedisAddrs) == 0 {
		p.fail("REDIS_MASTER_NAME", "needs REDIS_ADDR to list the Sentinel addresses")
	}
	c.RedisCluster = p.boolean("REDIS_CLUSTER", false) || (len(c.RedisAddrs) > 1 && c.RedisMasterName == "")
	if c.RedisCluster && c.RedisMasterName != "" {
		p.fail("REDIS_CLUSTER", "cannot be combined with REDIS_MASTER_NAME: Sentinel serves one master, not a cluster")
	}
	if c.RedisCluster && c.RedisDB != 0 {
		p.fail("REDIS_DB", "must be 0 on Redis Cluster, which has only database 0")
	}
	if c.MySQLDSN != "" {
		if _, err := mysql.ParseDSN(c.MySQLDSN); err != nil {
			p.fail("MYSQL_DSN", "must be a DSN such as user:password@tcp(host:3306)/dbname (%v)", err)
		}
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.fail("PUBLIC_URL", "must be an absolute http or https URL such as https://control.example.com; got %q", c.PublicURL)
		}
	}
	if c.SlackWebhookURL != "" {
		if u, err := url.Parse(c.SlackWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.fail("SLACK_WEBHOOK_URL", "must be an absolute https URL such as https://hooks.slack.com/services/...")
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		p.fail("HTTP_ADDR", "must be [host]:port such as :8080 or 127.0.0.1:8080; got %q", c.HTTPAddr)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p.fail("LOG_LEVEL", "must be one of debug, info, warn, error; got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		p.fail("LOG_FORMAT", "must be text or json; got %q", c.LogFormat)
	}
	if c.Alerts.HeartbeatGrace < c.HeartbeatInterval {
		p.fail("ALERT_HEARTBEAT_GRACE_SECONDS", "must be at least HEARTBEAT_INTERVAL_SECONDS (%d), or every worker would flap between online and offline", int(c.HeartbeatInterval.Seconds()))
	}
	c.SMTP = p.smtp()

	if c.Token == "" {
		c.Token = NewToken()
		c.TokenGenerated = true
	} else if len(c.Token) < 16 {
		p.fail("CONTROL_PLANE_TOKEN", "must be at least 16 characters; leave it unset to have one generated")
	}

	if len(p.errs) > 0 {
		return c, fmt.Errorf("invalid configuration:\n  %s", strings.Join(p.errs, "\n  "))
	}
	return c, nil
}

// NewToken returns a random 32-byte token, hex-encoded.
func NewToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // unreachable: since Go 1.24 rand.Read crashes the program itself instead of returning an error
	}
	return hex.EncodeToString(b)
}

// SMTPTLSModes lists the accepted SMTP_TLS values.
var SMTPTLSModes = []string{"tls", "starttls", "opportunistic", "none"}

func (p *parser) smtp() SMTP {
	s := SMTP{
		Host:     p.getenv("SMTP_HOST"),
		Username: p.getenv("SMTP_USERNAME"),
		Password: p.getenv("SMTP_PASSWORD"),
		From:     p.getenv("SMTP_FROM"),
		TLS:      strings.ToLower(p.getenv("SMTP_TLS")),
	}
	s.Port = p.integer("SMTP_PORT", 587, 1, 65535, "a TCP port from 1 to 65535")
	for _, to := range strings.Split(p.getenv("SMTP_TO"), ",") {
		if to = strings.TrimSpace(to); to != "" {
			if _, err := mail.ParseAddress(to); err != nil {
				p.fail("SMTP_TO", "must be a comma-separated list of email addresses; %q is not one", to)
			}
			s.To = append(s.To, to)
		}
	}
	if s.TLS == "" {
		switch {
		case s.Port == 465:
			s.TLS = "tls"
		case s.Username != "":
			s.TLS = "starttls"
		default:
			s.TLS = "opportunistic"
		}
	}
	valid := false
	for _, m := range SMTPTLSModes {
		valid = valid || s.TLS == m
	}
	if !valid {
		p.fail("SMTP_TLS", "must be one of tls, starttls, opportunistic, none; got %q", s.TLS)
	}
	if s.Host == "" {
		return s
	}
	if s.From == "" {
		p.fail("SMTP_FROM", "is required when SMTP_HOST is set, e.g. control-plane@example.com")
	} else if _, err := mail.ParseAddress(s.From); err != nil {
		p.fail("SMTP_FROM", "must be an email address; got %q", s.From)
	}
	if len(s.To) == 0 {
		p.fail("SMTP_TO", "is required when SMTP_HOST is set: a comma-separated list of recipients")
	}
	if s.Username != "" && (s.TLS == "none" || s.TLS == "opportunistic") {
		p.fail("SMTP_TLS", "must be tls or starttls when SMTP_USERNAME is set, so the password is never sent in clear text; got %q", s.TLS)
	}
	return s
}

// parser collects every bad variable instead of stopping at the first.
type parser struct {
	getenv func(string) string
	errs   []string
}

func (p *parser) fail(name, format string, args ...any) {
	p.errs = append(p.errs, name+" "+fmt.Sprintf(format, args...))
}

func (p *parser) str(name, def string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

func (p *parser) integer(name string, def, min, max int, form string) int {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		p.fail(name, "must be %s; got %q", form, v)
		return def
	}
	return n
}

func (p *parser) seconds(name string, def time.Duration, min, max int) time.Duration {
	n := p.integer(name, int(def/time.Second), min, max, fmt.Sprintf("a whole number of seconds from %d to %d", min, max))
	return time.Duration(n) * time.Second
}

func (p *parser) millis(name string, def time.Duration, min, max int) time.Duration {
	n := p.integer(name, int(def/time.Millisecond), min, max, fmt.Sprintf("a whole number of milliseconds from %d to %d", min, max))
	return time.Duration(n) * time.Millisecond
}

func (p *parser) percent(name string, def float64) float64 {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0 && f <= 100) { // the negated form also rejects NaN
		p.fail(name, "must be a percentage greater than 0 and at most 100, such as 5 or 2.5; got %q", v)
		return def
	}
	return f
}

func (p *parser) boolean(name string, def bool) bool {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, "must be true or false; got %q", v)
		return def
	}
	return b
}
