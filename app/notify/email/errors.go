package email

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"

	mail "github.com/wneessen/go-mail"

	"github.com/verifier/controlplane/app/notify"
)

// StepError is a failure in one step of sending an email: dial, hello,
// starttls, auth or send.
type StepError struct {
	Step string // the step that failed
	Addr string // the SMTP server's host:port
	// Retry reports whether the same email may get through later.
	Retry bool
	// Hint is the setting to check when the cause is likely configuration.
	Hint string
	Err  error // tagged with a notify.Reason
}

func (e *StepError) Error() string {
	msg := fmt.Sprintf("smtp %s %s: %v", e.Step, e.Addr, e.Err)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }

func stepError(step, addr string, reason notify.Reason, retry bool, err error) *StepError {
	return &StepError{Step: step, Addr: addr, Retry: retry, Err: notify.WithReason(reason, err)}
}

// classifyDialError returns the StepError for a failure to connect, to read
// the greeting or to exchange EHLO.
func classifyDialError(step, addr, tlsMode string, err error) *StepError {
	var recordErr tls.RecordHeaderError
	switch {
	case errors.As(err, &recordErr):
		e := stepError(step, addr, notify.ReasonConfig, false, err)
		e.Hint = "the server did not answer with TLS: if the port expects plain SMTP or STARTTLS (usually 25 or 587), set SMTP_TLS=starttls or opportunistic"
		return e
	case isCertificateError(err):
		return classifyTLSError(step, addr, err)
	case notify.IsTimeout(err):
		e := stepError(step, addr, notify.ReasonTimeout, true, err)
		if step == "hello" && tlsMode != TLSImplicit {
			e.Hint = "the server sent no SMTP greeting: if the port expects implicit TLS (usually 465), set SMTP_TLS=tls"
		}
		return e
	}
	if e := classifyReply(step, addr, err); e != nil {
		return e
	}
	return stepError(step, addr, notify.ReasonNetwork, true, err)
}

// classifyTLSError returns the StepError for a failed TLS handshake or
// STARTTLS command. Certificate and protocol errors need a change of
// settings, so they are not retried.
func classifyTLSError(step, addr string, err error) *StepError {
	var alertErr tls.AlertError
	var recordErr tls.RecordHeaderError
	switch {
	case isCertificateError(err):
		e := stepError(step, addr, notify.ReasonConfig, false, err)
		e.Hint = "the server's TLS certificate is not trusted for this host: check SMTP_HOST, and that the system trusts the CA that signed the certificate"
		return e
	case errors.As(err, &alertErr), errors.As(err, &recordErr):
		return stepError(step, addr, notify.ReasonConfig, false, err)
	case notify.IsTimeout(err):
		return stepError(step, addr, notify.ReasonTimeout, true, err)
	}
	if e := classifyReply(step, addr, err); e != nil {
		return e
	}
	return stepError(step, addr, notify.ReasonNetwork, true, err)
}

// isCertificateError reports whether err is a failed verification of the
// server's certificate.
func isCertificateError(err error) bool {
	var verifyErr *tls.CertificateVerificationError
	var authorityErr x509.UnknownAuthorityError
	var hostnameErr x509.HostnameError
	var invalidErr x509.CertificateInvalidError
	return errors.As(err, &verifyErr) || errors.As(err, &authorityErr) ||
		errors.As(err, &hostnameErr) || errors.As(err, &invalidErr)
}

// classifyReply returns the StepError for an SMTP error reply, or nil when
// err is not one: 4xx replies are temporary and retried, 5xx are not.
func classifyReply(step, addr string, err error) *StepError {
	var reply *textproto.Error
	if !errors.As(err, &reply) {
		return nil
	}
	return stepError(step, addr, notify.ReasonSMTP, reply.Code >= 400 && reply.Code < 500, err)
}

// classifyAuthError returns the StepError for a failed AUTH exchange. A
// permanent rejection means wrong credentials, so it is not retried.
func classifyAuthError(addr, mechanism string, err error) *StepError {
	err = fmt.Errorf("AUTH %s: %w", mechanism, err)
	var reply *textproto.Error
	switch {
	case errors.As(err, &reply) && reply.Code >= 500:
		e := stepError("auth", addr, notify.ReasonConfig, false, err)
		e.Hint = "check SMTP_USERNAME and SMTP_PASSWORD"
		return e
	case errors.As(err, &reply):
		return stepError("auth", addr, notify.ReasonSMTP, true, err)
	case notify.IsTimeout(err):
		return stepError("auth", addr, notify.ReasonTimeout, true, err)
	case isNetworkError(err):
		return stepError("auth", addr, notify.ReasonNetwork, true, err)
	}
	return stepError("auth", addr, notify.ReasonConfig, false, err)
}

// classifySendError returns the StepError for a failed MAIL FROM, RCPT TO or
// DATA. Rejected addresses (5xx) are not retried; 4xx replies and lost
// connections are.
func classifySendError(addr string, err error) *StepError {
	var sendErr *mail.SendError
	if !errors.As(err, &sendErr) {
		if notify.IsTimeout(err) {
			return stepError("send", addr, notify.ReasonTimeout, true, err)
		}
		return stepError("send", addr, notify.ReasonNetwork, true, err)
	}

	// go-mail's message ends with the random Message-ID, which would make
	// every attempt's error text differ and defeat the failure log's
	// deduplication.
	err = &sendErrorText{err: sendErr, text: strings.TrimSuffix(sendErr.Error(), ", affected message ID: "+sendErr.MessageID())}
	switch {
	case sendErr.Reason == mail.ErrGetSender, sendErr.Reason == mail.ErrGetRcpts, sendErr.Reason == mail.ErrNoUnencoded:
		return stepError("send", addr, notify.ReasonConfig, false, err)
	case sendErr.IsTemp():
		return stepError("send", addr, notify.ReasonSMTP, true, err)
	case sendErr.ErrorCode() >= 500:
		return stepError("send", addr, notify.ReasonSMTP, false, err)
	}
	// No reply code: the connection failed.
	return stepError("send", addr, notify.ReasonNetwork, true, err)
}

// sendErrorText is a *mail.SendError with a message of our choosing.
type sendErrorText struct {
	err  *mail.SendError
	text string
}

func (e *sendErrorText) Error() string { return e.text }
func (e *sendErrorText) Unwrap() error { return e.err }

// isNetworkError reports whether err is a connection failure.
func isNetworkError(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}
