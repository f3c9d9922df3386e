package email

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/mail"
	"time"
)

// TLS modes of Config.TLS, the accepted values of SMTP_TLS.
const (
	// TLSImplicit connects with TLS from the first byte (SMTPS, RFC 8314),
	// usually on port 465.
	TLSImplicit = "tls"
	// TLSStartTLS connects in plain text and upgrades with STARTTLS
	// (RFC 3207); a server that does not offer it is an error.
	TLSStartTLS = "starttls"
	// TLSOpportunistic upgrades with STARTTLS when the server offers it
	// and otherwise sends in plain text.
	TLSOpportunistic = "opportunistic"
	// TLSNone never uses TLS.
	TLSNone = "none"
)

// Default ports by TLS mode.
const (
	DefaultPortImplicitTLS = 465
	DefaultPortSubmission  = 587 // STARTTLS
	DefaultPortSMTP        = 25
)

// DefaultDialTimeout bounds connecting, and then each later SMTP exchange.
const DefaultDialTimeout = 10 * time.Second

// Config configures the email notifier.
type Config struct {
	Host string
	// Port defaults by TLS mode: 465 for tls, 587 for starttls, else 25.
	Port int
	// Username enables SMTP AUTH. Credentials are only ever sent over TLS.
	Username string
	Password string
	From     string
	To       []string
	// TLS is one of tls, starttls, opportunistic or none. Empty picks tls on
	// port 465, else starttls when Username is set, else opportunistic.
	TLS string
	// DialTimeout bounds connecting; go-mail applies the same timeout
	// again to each later SMTP exchange. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// TLSConfig is cloned for the TLS connection; nil means the system
	// roots. ServerName defaults to Host and MinVersion to TLS 1.2. Tests
	// set RootCAs to trust their own CA.
	TLSConfig *tls.Config
}

// withDefaults returns c with the TLS mode, port and timeout filled in.
func (c Config) withDefaults() Config {
	if c.TLS == "" {
		switch {
		case c.Port == DefaultPortImplicitTLS:
			c.TLS = TLSImplicit
		case c.Username != "":
			c.TLS = TLSStartTLS
		default:
			c.TLS = TLSOpportunistic
		}
	}
	if c.Port == 0 {
		switch c.TLS {
		case TLSImplicit:
			c.Port = DefaultPortImplicitTLS
		case TLSStartTLS:
			c.Port = DefaultPortSubmission
		default:
			c.Port = DefaultPortSMTP
		}
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	return c
}

// Validate returns every problem with c at once, each naming the
// environment variable that sets the value, or nil.
func (c Config) Validate() error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Host == "" {
		fail("SMTP_HOST is required, e.g. smtp.example.com")
	}
	if c.Port < 0 || c.Port > 65535 {
		fail("SMTP_PORT must be a TCP port from 1 to 65535; got %d", c.Port)
	}
	if _, err := mail.ParseAddress(c.From); err != nil {
		fail("SMTP_FROM must be an email address such as control-plane@example.com; got %q", c.From)
	}
	if len(c.To) == 0 {
		fail("SMTP_TO is required: a comma-separated list of recipients")
	}
	for _, to := range c.To {
		if _, err := mail.ParseAddress(to); err != nil {
			fail("SMTP_TO must list email addresses; %q is not one", to)
		}
	}
	switch c.TLS {
	case "", TLSImplicit, TLSStartTLS, TLSOpportunistic:
	case TLSNone:
		if c.Username != "" {
			fail("SMTP_TLS must not be none when SMTP_USERNAME is set, because the password would be sent in clear text; use tls or starttls")
		}
	default:
		fail("SMTP_TLS must be one of tls, starttls, opportunistic, none; got %q", c.TLS)
	}
	if c.Password != "" && c.Username == "" {
		fail("SMTP_PASSWORD is set but SMTP_USERNAME is empty; set both to authenticate, or neither")
	}
	if c.DialTimeout < 0 {
		fail("the SMTP dial timeout must not be negative; got %s", c.DialTimeout)
	}
	return errors.Join(errs...)
}

// tlsConfig returns the TLS configuration for connecting to c.Host.
func (c Config) tlsConfig() *tls.Config {
	config := &tls.Config{}
	if c.TLSConfig != nil {
		config = c.TLSConfig.Clone()
	}
	if config.ServerName == "" {
		config.ServerName = c.Host
	}
	if config.MinVersion == 0 {
		config.MinVersion = tls.VersionTLS12
	}
	return config
}
