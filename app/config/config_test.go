package config

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// env returns a getenv that reads vars and nothing else, so the real
// environment of the test process cannot leak in.
func env(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

const testToken = "0123456789abcdef-test-token"

func TestLoadDefaults(t *testing.T) {
	c, err := Load(env(map[string]string{"CONTROL_PLANE_TOKEN": testToken}))
	if err != nil {
		t.Fatalf("Load with only a token: %v", err)
	}

	checks := []struct {
		name      string
		got, want any
	}{
		{"Token", c.Token, testToken},
		{"TokenGenerated", c.TokenGenerated, false},
		{"HTTPAddr", c.HTTPAddr, ":8080"},
		{"PublicURL", c.PublicURL, ""},
		{"RedisAddrs", len(c.RedisAddrs), 0},
		{"RedisDB", c.RedisDB, 0},
		{"RedisPoolSize", c.RedisPoolSize, 0},
		{"RedisTimeout", c.RedisTimeout, 500 * time.Millisecond},
		{"SnapshotInterval", c.SnapshotInterval, 60 * time.Second},
		{"SnapshotRetention", c.SnapshotRetention, 30 * 24 * time.Hour},
		{"HeartbeatInterval", c.HeartbeatInterval, 5 * time.Second},
		{"WorkerRetention", c.WorkerRetention, 24 * time.Hour},
		{"MaxDesiredCount", c.MaxDesiredCount, 1000},
		{"MetricsMaxPools", c.MetricsMaxPools, 100},
		{"Alerts.Enabled", c.Alerts.Enabled, false},
		{"Alerts.CheckInterval", c.Alerts.CheckInterval, 15 * time.Second},
		{"Alerts.HeartbeatGrace", c.Alerts.HeartbeatGrace, 30 * time.Second},
		{"Alerts.Cooldown", c.Alerts.Cooldown, 900 * time.Second},
		{"Alerts.ErrorRateThreshold", c.Alerts.ErrorRateThreshold, 10.0},
		{"Alerts.MinJobs", c.Alerts.MinJobs, 20},
		{"Alerts.AutoActions", c.Alerts.AutoActions, false},
		{"SMTP.Host", c.SMTP.Host, ""},
		{"SMTP.Port", c.SMTP.Port, 587},
		{"SMTP.TLS", c.SMTP.TLS, "opportunistic"},
		{"LogLevel", c.LogLevel, "info"},
		{"LogFormat", c.LogFormat, "text"},
	}
	for _, check := range checks {
		if check.got != check.want {
			t.Errorf("%s = %v, want %v", check.name, check.got, check.want)
		}
	}
}

func TestLoadReadsEveryVariable(t *testing.T) {
	c, err := Load(env(map[string]string{
		"CONTROL_PLANE_TOKEN":           testToken,
		"HTTP_ADDR":                     "127.0.0.1:9090",
		"PUBLIC_URL":                    "https://control.example.com/",
		"REDIS_ADDR":                    "10.0.0.1:26379, 10.0.0.2:26379",
		"REDIS_MASTER_NAME":             "mymaster",
		"REDIS_DB":                      "3",
		"REDIS_POOL_SIZE":               "10",
		"REDIS_TIMEOUT_MS":              "250",
		"HEARTBEAT_INTERVAL_SECONDS":    "10",
		"ALERT_HEARTBEAT_GRACE_SECONDS": "45",
		"ALERT_ERROR_RATE_THRESHOLD":    "2.5",
		"ALERTS_ENABLED":                "true",
		"AUTO_ACTIONS_ENABLED":          "1",
		"METRICS_MAX_POOLS":             "20",
		"LOG_LEVEL":                     "DEBUG",
		"LOG_FORMAT":                    "json",
	}))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	if c.HTTPAddr != "127.0.0.1:9090" {
		t.Errorf("HTTPAddr = %q", c.HTTPAddr)
	}
	if c.PublicURL != "https://control.example.com" {
		t.Errorf("PublicURL = %q, want the trailing slash trimmed", c.PublicURL)
	}
	if len(c.RedisAddrs) != 2 || c.RedisAddrs[0] != "10.0.0.1:26379" || c.RedisAddrs[1] != "10.0.0.2:26379" {
		t.Errorf("RedisAddrs = %q, want two trimmed addresses", c.RedisAddrs)
	}
	if c.RedisMasterName != "mymaster" || c.RedisDB != 3 || c.RedisPoolSize != 10 {
		t.Errorf("Redis options = %q, %d, %d", c.RedisMasterName, c.RedisDB, c.RedisPoolSize)
	}
	if c.RedisTimeout != 250*time.Millisecond {
		t.Errorf("RedisTimeout = %v", c.RedisTimeout)
	}
	if c.HeartbeatInterval != 10*time.Second || c.Alerts.HeartbeatGrace != 45*time.Second {
		t.Errorf("interval, grace = %v, %v", c.HeartbeatInterval, c.Alerts.HeartbeatGrace)
	}
	if c.Alerts.ErrorRateThreshold != 2.5 {
		t.Errorf("ErrorRateThreshold = %v", c.Alerts.ErrorRateThreshold)
	}
	if !c.Alerts.Enabled || !c.Alerts.AutoActions {
		t.Errorf("Enabled, AutoActions = %v, %v", c.Alerts.Enabled, c.Alerts.AutoActions)
	}
	if c.MetricsMaxPools != 20 {
		t.Errorf("MetricsMaxPools = %d", c.MetricsMaxPools)
	}
	if c.LogLevel != "debug" || c.LogFormat != "json" {
		t.Errorf("LogLevel, LogFormat = %q, %q", c.LogLevel, c.LogFormat)
	}
}

func TestLoadReportsEveryBadVariable(t *testing.T) {
	bad := map[string]string{
		"CONTROL_PLANE_TOKEN":        testToken,
		"HTTP_ADDR":                  "8080",
		"REDIS_DB":                   "-1",
		"HEARTBEAT_INTERVAL_SECONDS": "5s",
		"ALERT_ERROR_RATE_THRESHOLD": "150",
		"LOG_FORMAT":                 "xml",
	}
	_, err := Load(env(bad))
	if err == nil {
		t.Fatal("Load accepted five bad variables")
	}
	msg := err.Error()
	for name, value := range bad {
		if name == "CONTROL_PLANE_TOKEN" {
			continue
		}
		if !strings.Contains(msg, name) {
			t.Errorf("error does not name %s:\n%s", name, msg)
		}
		if !strings.Contains(msg, value) {
			t.Errorf("error does not show the bad value %q of %s:\n%s", value, name, msg)
		}
	}
	if strings.Contains(msg, testToken) {
		t.Errorf("error shows the token:\n%s", msg)
	}
	if lines := strings.Count(msg, "\n"); lines != 5 {
		t.Errorf("error has %d variable lines, want 5, one per bad variable:\n%s", lines, msg)
	}
}

func TestLoadStatesAcceptedForm(t *testing.T) {
	tests := []struct {
		name, value, form string
	}{
		{"HTTP_ADDR", "localhost", "[host]:port"},
		{"REDIS_ADDR", "redis.internal", "host:port"},
		{"REDIS_ADDR", "10.0.0.1:6379,", "host:port"},
		{"REDIS_DB", "one", "a database number >= 0"},
		{"REDIS_TIMEOUT_MS", "5", "from 10 to 60000"},
		{"SNAPSHOT_INTERVAL_SECONDS", "1", "from 5 to 86400"},
		{"SNAPSHOT_RETENTION_DAYS", "0", "from 1 to 3650"},
		{"WORKER_RETENTION_HOURS", "0", "from 1 to 8760"},
		{"POOL_MAX_DESIRED_COUNT", "0", "from 1 to 1000000"},
		{"METRICS_MAX_POOLS", "0", "from 1 to 10000"},
		{"ALERTS_ENABLED", "yes", "true or false"},
		{"AUTO_ACTIONS_ENABLED", "on", "true or false"},
		{"ALERT_CHECK_INTERVAL_SECONDS", "0", "from 1 to 3600"},
		{"ALERT_COOLDOWN_SECONDS", "-5", "from 0 to 604800"},
		{"ALERT_ERROR_RATE_THRESHOLD", "0", "greater than 0 and at most 100"},
		{"ALERT_ERROR_RATE_THRESHOLD", "ten", "greater than 0 and at most 100"},
		{"ALERT_MIN_JOBS", "0", "from 1 to 1000000"},
		{"PUBLIC_URL", "control.example.com", "absolute http or https URL"},
		{"SLACK_WEBHOOK_URL", "hooks.slack.com/services/x", "absolute https URL"},
		{"MYSQL_DSN", "not a dsn", "user:password@tcp(host:3306)/dbname"},
		{"LOG_LEVEL", "verbose", "debug, info, warn, error"},
		{"LOG_FORMAT", "yaml", "text or json"},
		{"SMTP_PORT", "70000", "from 1 to 65535"},
		{"SMTP_TLS", "ssl", "tls, starttls, opportunistic, none"},
		{"SMTP_TO", "not-an-address", "email addresses"},
		{"CONTROL_PLANE_TOKEN", "short", "at least 16 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			vars := map[string]string{"CONTROL_PLANE_TOKEN": testToken, tt.name: tt.value}
			_, err := Load(env(vars))
			if err == nil {
				t.Fatalf("Load accepted %s=%q", tt.name, tt.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.name+" ") {
				t.Errorf("error does not name %s:\n%s", tt.name, msg)
			}
			if !strings.Contains(msg, tt.form) {
				t.Errorf("error does not state the accepted form %q:\n%s", tt.form, msg)
			}
		})
	}
}

func TestLoadChecksDependentVariables(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		// wantVariable is the variable the error must name.
		wantVariable string
	}{
		{"master name without sentinels", map[string]string{"REDIS_MASTER_NAME": "mymaster"}, "REDIS_MASTER_NAME"},
		{"grace shorter than the interval", map[string]string{"HEARTBEAT_INTERVAL_SECONDS": "30", "ALERT_HEARTBEAT_GRACE_SECONDS": "10"}, "ALERT_HEARTBEAT_GRACE_SECONDS"},
		{"smtp host without sender", map[string]string{"SMTP_HOST": "mail.example.com", "SMTP_TO": "ops@example.com"}, "SMTP_FROM"},
		{"smtp host without recipients", map[string]string{"SMTP_HOST": "mail.example.com", "SMTP_FROM": "cp@example.com"}, "SMTP_TO"},
		{"smtp bad sender", map[string]string{"SMTP_HOST": "mail.example.com", "SMTP_FROM": "nobody", "SMTP_TO": "ops@example.com"}, "SMTP_FROM"},
		{"password in clear text", map[string]string{"SMTP_HOST": "mail.example.com", "SMTP_FROM": "cp@example.com", "SMTP_TO": "ops@example.com", "SMTP_USERNAME": "cp", "SMTP_TLS": "none"}, "SMTP_TLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.vars["CONTROL_PLANE_TOKEN"] = testToken
			_, err := Load(env(tt.vars))
			if err == nil {
				t.Fatal("Load accepted the combination")
			}
			if !strings.Contains(err.Error(), tt.wantVariable+" ") {
				t.Errorf("error does not name %s:\n%v", tt.wantVariable, err)
			}
		})
	}
}

func TestSMTPTLSDefaults(t *testing.T) {
	base := map[string]string{
		"CONTROL_PLANE_TOKEN": testToken,
		"SMTP_HOST":           "mail.example.com",
		"SMTP_FROM":           "control-plane@example.com",
		"SMTP_TO":             "ops@example.com, oncall@example.com",
	}
	tests := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"port 465", map[string]string{"SMTP_PORT": "465"}, "tls"},
		{"port 465 with a username", map[string]string{"SMTP_PORT": "465", "SMTP_USERNAME": "cp"}, "tls"},
		{"username on 587", map[string]string{"SMTP_USERNAME": "cp"}, "starttls"},
		{"username on 25", map[string]string{"SMTP_PORT": "25", "SMTP_USERNAME": "cp"}, "starttls"},
		{"no username", map[string]string{}, "opportunistic"},
		{"no username on 25", map[string]string{"SMTP_PORT": "25"}, "opportunistic"},
		{"explicit none", map[string]string{"SMTP_TLS": "none"}, "none"},
		{"explicit upper case", map[string]string{"SMTP_TLS": "STARTTLS"}, "starttls"},
		{"explicit tls on 587", map[string]string{"SMTP_TLS": "tls"}, "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range base {
				vars[k] = v
			}
			for k, v := range tt.vars {
				vars[k] = v
			}
			c, err := Load(env(vars))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if c.SMTP.TLS != tt.want {
				t.Errorf("SMTP.TLS = %q, want %q", c.SMTP.TLS, tt.want)
			}
			if len(c.SMTP.To) != 2 {
				t.Errorf("SMTP.To = %q, want two recipients", c.SMTP.To)
			}
		})
	}
}

func TestLoadGeneratesToken(t *testing.T) {
	first, err := Load(env(nil))
	if err != nil {
		t.Fatalf("Load with nothing set: %v", err)
	}
	if !first.TokenGenerated {
		t.Error("TokenGenerated = false with CONTROL_PLANE_TOKEN unset")
	}
	if len(first.Token) != 64 {
		t.Errorf("generated token has %d characters, want 64 (32 random bytes in hex)", len(first.Token))
	}
	if _, err := hex.DecodeString(first.Token); err != nil {
		t.Errorf("generated token %q is not hex: %v", first.Token, err)
	}

	second, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if second.Token == first.Token {
		t.Error("two runs generated the same token")
	}
}
