// Package email sends alert notifications by SMTP with go-mail: one message
// per notification to every configured recipient, with a plain-text and an
// HTML part.
package email

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
)

// Notifier sends notifications to one SMTP server.
type Notifier struct {
	cfg Config
	// Now is the clock used for "for 5m"; tests replace it.
	Now func() time.Time
}

// New returns a Notifier for cfg, or the error of cfg.Validate.
func New(cfg Config) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid email configuration: %w", err)
	}
	return &Notifier{cfg: cfg.withDefaults(), Now: time.Now}, nil
}

// Name returns "email".
func (n *Notifier) Name() string { return "email" }

// Addr returns the SMTP server's host:port.
func (n *Notifier) Addr() string {
	return net.JoinHostPort(n.cfg.Host, strconv.Itoa(n.cfg.Port))
}

// Notify sends one email for notification in the steps dial, hello,
// starttls, auth and send. An error names its step and the server address.
// Network errors, timeouts and 4xx SMTP replies are retried. Template,
// address, TLS and authentication errors and 5xx replies are not. An empty
// notification sends nothing.
//
// Notify never sends credentials over a connection that is not TLS: with
// TLS mode opportunistic and a server that does not offer STARTTLS, it fails
// before AUTH. go-mail v0.8.1 does not ensure this itself, because its PLAIN
// and LOGIN mechanisms allow plain text to localhost and SCRAM never checks.
func (n *Notifier) Notify(ctx context.Context, notification fleet.Notification) (retry bool, err error) {
	if notification.Empty() {
		return false, nil
	}
	msg, err := n.buildMessage(ctx, notification)
	if err != nil {
		return false, err
	}

	session, dialErr := n.dial(ctx)
	if dialErr != nil {
		return dialErr.Retry, dialErr
	}
	defer session.close()

	steps := []func() *StepError{
		session.startTLS,
		session.auth,
		func() *StepError { return session.send(msg) },
	}
	for _, step := range steps {
		if stepErr := step(); stepErr != nil {
			return stepErr.Retry, stepErr
		}
	}
	session.quit()
	return false, nil
}

// session is one SMTP connection of one Notify call.
type session struct {
	cfg    Config
	addr   string
	client *mail.Client
	smtp   *smtp.Client

	mu   sync.Mutex
	conn net.Conn // set once dialled, so that close can always release it
	// stopCancel detaches the ctx watcher that closes conn when ctx ends.
	stopCancel func() bool
}

// dial connects to the server, with TLS from the start in mode tls, reads its
// greeting and sends EHLO. Its errors name the step dial (no connection) or
// hello (connected, but the server did not greet properly).
func (n *Notifier) dial(ctx context.Context) (*session, *StepError) {
	s := &session{cfg: n.cfg, addr: n.Addr()}

	timeout := n.cfg.DialTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	if timeout <= 0 {
		return nil, stepError("dial", s.addr, notify.ReasonTimeout, true, context.DeadlineExceeded)
	}

	client, err := mail.NewClient(n.cfg.Host,
		mail.WithPort(n.cfg.Port),
		mail.WithTimeout(timeout),
		// STARTTLS and AUTH are done by session, so that each step gets
		// its own error and credentials wait for a TLS check.
		mail.WithTLSPolicy(mail.NoTLS),
		mail.WithDialContextFunc(s.dialContext),
	)
	if err != nil {
		return nil, stepError("dial", s.addr, notify.ReasonConfig, false, err)
	}
	s.client = client

	s.smtp, err = client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		step := "hello"
		if s.connection() == nil {
			step = "dial"
		}
		s.close()
		return nil, classifyDialError(step, s.addr, n.cfg.TLS, err)
	}

	s.stopCancel = context.AfterFunc(ctx, func() { s.closeConn() })
	return s, nil
}

// dialContext opens the TCP connection, wrapped in TLS in mode tls, and
// remembers it so that close can release it even when go-mail fails later.
func (s *session) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	var err error
	dialer := &net.Dialer{}
	if s.cfg.TLS == TLSImplicit {
		conn, err = (&tls.Dialer{NetDialer: dialer, Config: s.cfg.tlsConfig()}).DialContext(ctx, network, addr)
	} else {
		conn, err = dialer.DialContext(ctx, network, addr)
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	return conn, nil
}

func (s *session) connection() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

func (s *session) closeConn() {
	if conn := s.connection(); conn != nil {
		_ = conn.Close()
	}
}

// quit ends the session politely after a successful send. Its error is
// ignored because the server has already accepted the message.
func (s *session) quit() {
	_ = s.client.CloseWithSMTPClient(s.smtp)
}

// close releases the connection and stops watching ctx. It sends no QUIT,
// because after a failure the connection may be broken and QUIT would wait
// for the full timeout.
func (s *session) close() {
	if s.stopCancel != nil {
		s.stopCancel()
	}
	s.closeConn()
}

// startTLS upgrades the connection in modes starttls and opportunistic.
func (s *session) startTLS() *StepError {
	if s.cfg.TLS != TLSStartTLS && s.cfg.TLS != TLSOpportunistic {
		return nil
	}
	offered, _ := s.smtp.Extension("STARTTLS")
	if !offered {
		if s.cfg.TLS == TLSStartTLS {
			return stepError("starttls", s.addr, notify.ReasonConfig, false, fmt.Errorf(
				"the server does not offer STARTTLS; set SMTP_TLS=tls if the port expects implicit TLS, or opportunistic to send without TLS"))
		}
		return nil
	}
	if err := s.smtp.StartTLS(s.cfg.tlsConfig()); err != nil {
		return classifyTLSError("starttls", s.addr, err)
	}
	return nil
}

// authMechanisms lists the SASL mechanisms Notify uses, most preferred first.
var authMechanisms = []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN"}

// auth authenticates when a username is set, and only over TLS.
func (s *session) auth() *StepError {
	if s.cfg.Username == "" {
		return nil
	}
	state, err := s.smtp.GetTLSConnectionState()
	if err != nil || !state.HandshakeComplete {
		return stepError("auth", s.addr, notify.ReasonConfig, false, fmt.Errorf(
			"credentials not sent, because the connection is without TLS: the server did not offer STARTTLS; use a server with TLS and set SMTP_TLS=tls or starttls"))
	}

	offered, list := s.smtp.Extension("AUTH")
	if !offered {
		return stepError("auth", s.addr, notify.ReasonConfig, false, fmt.Errorf(
			"the server does not offer AUTH; unset SMTP_USERNAME if it needs no login"))
	}
	mechanism := ""
	for _, m := range authMechanisms {
		if slices.Contains(strings.Fields(strings.ToUpper(list)), m) {
			mechanism = m
			break
		}
	}

	var a smtp.Auth
	switch mechanism {
	case "SCRAM-SHA-256":
		a = smtp.ScramSHA256Auth(s.cfg.Username, s.cfg.Password)
	case "SCRAM-SHA-1":
		a = smtp.ScramSHA1Auth(s.cfg.Username, s.cfg.Password)
	case "PLAIN":
		a = smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, s.cfg.Host, false)
	case "LOGIN":
		a = smtp.LoginAuth(s.cfg.Username, s.cfg.Password, s.cfg.Host, false)
	default:
		return stepError("auth", s.addr, notify.ReasonConfig, false, fmt.Errorf(
			"the server offers AUTH %s but none of %s", list, strings.Join(authMechanisms, ", ")))
	}
	if err := s.smtp.Auth(a); err != nil {
		return classifyAuthError(s.addr, mechanism, err)
	}
	return nil
}

// send transmits msg with MAIL FROM, RCPT TO for each recipient and DATA.
func (s *session) send(msg *mail.Msg) *StepError {
	if err := s.client.SendWithSMTPClient(s.smtp, msg); err != nil {
		return classifySendError(s.addr, err)
	}
	return nil
}
