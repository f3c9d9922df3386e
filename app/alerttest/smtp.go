package alerttest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	smtpserver "github.com/emersion/go-smtp"
)

// Email is one message the SMTP server accepted, parsed as MIME.
type Email struct {
	At      time.Time
	From    string
	To      []string
	Subject string // decoded
	Text    string // the text/plain part, decoded
	HTML    string // the text/html part, decoded
}

// SMTPServer is a plain SMTP server on 127.0.0.1 that accepts every message
// without authentication.
type SMTPServer struct {
	Host string
	Port string

	now      func() time.Time
	mu       sync.Mutex
	messages []Email
	errs     []error
	arrived  chan struct{}
}

// StartSMTP starts the server, which runs until the test ends. now stamps
// each message.
func StartSMTP(t testing.TB, now func() time.Time) *SMTPServer {
	t.Helper()
	s := &SMTPServer{now: now, arrived: make(chan struct{}, 1000)}
	srv := smtpserver.NewServer(&smtpBackend{s: s})
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen for SMTP: %v", err)
	}
	s.Host, s.Port, _ = net.SplitHostPort(ln.Addr().String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, smtpserver.ErrServerClosed) {
			t.Errorf("SMTP server: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, err := range s.errs {
			t.Errorf("SMTP server could not parse a message: %v", err)
		}
	})
	return s
}

// Messages returns every message accepted so far.
func (s *SMTPServer) Messages() []Email {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Email(nil), s.messages...)
}

// WaitMessages waits until n messages arrived in total, or fails the test
// after timeout.
func (s *SMTPServer) WaitMessages(t testing.TB, n int, timeout time.Duration) []Email {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if msgs := s.Messages(); len(msgs) >= n {
			return msgs
		}
		select {
		case <-s.arrived:
		case <-deadline:
			t.Fatalf("SMTP server received %d messages within %s, want %d", len(s.Messages()), timeout, n)
		}
	}
}

type smtpBackend struct{ s *SMTPServer }

func (b *smtpBackend) NewSession(*smtpserver.Conn) (smtpserver.Session, error) {
	return &smtpSession{s: b.s}, nil
}

type smtpSession struct {
	s    *SMTPServer
	from string
	to   []string
}

func (x *smtpSession) Mail(from string, _ *smtpserver.MailOptions) error {
	x.from = from
	return nil
}

func (x *smtpSession) Rcpt(to string, _ *smtpserver.RcptOptions) error {
	x.to = append(x.to, to)
	return nil
}

func (x *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	e, parseErr := parseEmail(raw)
	e.At, e.From, e.To = x.s.now(), x.from, x.to
	x.s.mu.Lock()
	if parseErr != nil {
		x.s.errs = append(x.s.errs, parseErr)
	}
	x.s.messages = append(x.s.messages, e)
	x.s.mu.Unlock()
	x.s.arrived <- struct{}{}
	return nil
}

func (x *smtpSession) Reset() { x.from, x.to = "", nil }

func (x *smtpSession) Logout() error { return nil }

func parseEmail(raw []byte) (Email, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Email{}, err
	}
	var e Email
	if e.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return e, err
	}
	err = walkParts(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, &e)
	return e, err
}

// walkParts stores the text/plain and text/html parts of a MIME body in e,
// descending into multipart containers.
func walkParts(contentType, encoding string, body io.Reader, e *Email) error {
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return err
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		r := multipart.NewReader(body, params["boundary"])
		for {
			part, err := r.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if err := walkParts(part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part, e); err != nil {
				return err
			}
		}
	}
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	switch mediaType {
	case "text/plain":
		e.Text = string(b)
	case "text/html":
		e.HTML = string(b)
	}
	return nil
}
