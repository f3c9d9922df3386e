package email_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	smtpserver "github.com/emersion/go-smtp"
)

// received is one message the test server accepted.
type received struct {
	from string
	rcpt []string
	data []byte
}

// backend is an in-process SMTP server's backend that records what clients
// do.
type backend struct {
	// users maps usernames to passwords; a non-empty map makes the server
	// offer AUTH PLAIN and require it before MAIL FROM.
	users map[string]string
	// rejectRcpt maps recipients to the reply RCPT TO gets.
	rejectRcpt map[string]*smtpserver.SMTPError

	mu       sync.Mutex
	messages []received
	// authAttempts records each AUTH command, and whether it came over TLS.
	authAttempts []authAttempt
}

type authAttempt struct {
	username string
	overTLS  bool
}

func (b *backend) NewSession(c *smtpserver.Conn) (smtpserver.Session, error) {
	return &session{backend: b, conn: c}, nil
}

func (b *backend) received() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.messages...)
}

func (b *backend) auths() []authAttempt {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]authAttempt(nil), b.authAttempts...)
}

type session struct {
	backend *backend
	conn    *smtpserver.Conn
	authed  bool
	current received
}

func (s *session) AuthMechanisms() []string {
	if len(s.backend.users) == 0 {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		_, overTLS := s.conn.TLSConnectionState()
		s.backend.mu.Lock()
		s.backend.authAttempts = append(s.backend.authAttempts, authAttempt{username: username, overTLS: overTLS})
		s.backend.mu.Unlock()
		if want, ok := s.backend.users[username]; !ok || want != password {
			return smtpserver.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtpserver.MailOptions) error {
	if len(s.backend.users) > 0 && !s.authed {
		return smtpserver.ErrAuthRequired
	}
	s.current = received{from: from}
	return nil
}

func (s *session) Rcpt(to string, _ *smtpserver.RcptOptions) error {
	if reply, ok := s.backend.rejectRcpt[to]; ok {
		return reply
	}
	s.current.rcpt = append(s.current.rcpt, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.current.data = data
	s.backend.mu.Lock()
	s.backend.messages = append(s.backend.messages, s.current)
	s.backend.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.current = received{} }
func (s *session) Logout() error { return nil }

// serverMode is how the test server uses TLS.
type serverMode int

const (
	plainServer    serverMode = iota // no TLS at all
	startTLSServer                   // offers STARTTLS
	implicitServer                   // TLS from the first byte
)

// startServer runs an SMTP server on 127.0.0.1 until the test ends and
// returns its port.
func startServer(t *testing.T, b *backend, mode serverMode, cert tls.Certificate) int {
	t.Helper()
	s := smtpserver.NewServer(b)
	s.Domain = "localhost"
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	// Offer AUTH without TLS too, so that only the client can keep
	// credentials off a plain connection.
	s.AllowInsecureAuth = true
	s.ErrorLog = log.New(io.Discard, "", 0)

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}}
	switch mode {
	case startTLSServer:
		s.TLSConfig = tlsConfig
	case implicitServer:
		listener = tls.NewListener(listener, tlsConfig)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(listener); err != nil && !errors.Is(err, smtpserver.ErrServerClosed) {
			t.Errorf("SMTP server: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = s.Close()
		<-done
	})
	return listener.Addr().(*net.TCPAddr).Port
}

// freePort returns a port on 127.0.0.1 where nothing listens.
func freePort(t *testing.T) int {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	_ = listener.Close()
	return port
}

// selfSignedCert returns a certificate for 127.0.0.1 and localhost, and a
// pool that trusts it.
func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test SMTP server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(parsed)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: parsed}, pool
}

func portString(port int) string { return strconv.Itoa(port) }
