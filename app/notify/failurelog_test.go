package notify_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/notify"
)

func TestFailureLogOncePerErrorText(t *testing.T) {
	logs := &logBuffer{}
	log := notify.NewFailureLog(logs.logger())
	refused := errors.New("connection refused")

	// Three notifications in a row fail the same way, each after retries.
	for range 3 {
		log.Retrying("email", 1, time.Second, refused)
		log.Retrying("email", 2, 2*time.Second, refused)
		log.GaveUp("email", 3, "out of attempts", refused)
	}

	if got := logs.countLevel("WARN"); got != 1 {
		t.Errorf("Warn lines = %d, want 1", got)
	}
	if got := logs.countLevel("ERROR"); got != 1 {
		t.Errorf("Error lines = %d, want 1", got)
	}
}

func TestFailureLogNewErrorText(t *testing.T) {
	logs := &logBuffer{}
	log := notify.NewFailureLog(logs.logger())

	log.Retrying("email", 1, time.Second, errors.New("connection refused"))
	log.Retrying("email", 2, time.Second, errors.New("connection refused"))
	log.Retrying("email", 3, time.Second, errors.New("451 try again later"))

	lines := logs.lines()
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[1], "451 try again later") {
		t.Errorf("second line %q does not carry the new error", lines[1])
	}
	if !strings.Contains(lines[1], "previous_error_repeats=1") {
		t.Errorf("second line %q does not count the unlogged repeat", lines[1])
	}
}

func TestFailureLogRecovery(t *testing.T) {
	logs := &logBuffer{}
	log := notify.NewFailureLog(logs.logger())
	refused := errors.New("connection refused")

	log.Succeeded("slack")
	if got := len(logs.lines()); got != 0 {
		t.Fatalf("success without a failure logged %d lines, want 0", got)
	}

	log.Retrying("slack", 1, time.Second, refused)
	log.Succeeded("slack")
	log.Retrying("slack", 1, time.Second, refused)

	if got := logs.countLevel("INFO"); got != 1 {
		t.Errorf("Info lines = %d, want 1 recovery line", got)
	}
	if got := logs.countLevel("WARN"); got != 2 {
		t.Errorf("Warn lines = %d, want 2: a failure after a recovery is news", got)
	}
}

func TestFailureLogChannelsIndependent(t *testing.T) {
	logs := &logBuffer{}
	log := notify.NewFailureLog(logs.logger())
	refused := errors.New("connection refused")

	log.Retrying("slack", 1, time.Second, refused)
	log.Retrying("email", 1, time.Second, refused)

	if got := logs.countLevel("WARN"); got != 2 {
		t.Errorf("Warn lines = %d, want one per channel", got)
	}
}

func TestFailureLogNil(t *testing.T) {
	var log *notify.FailureLog
	log.Retrying("slack", 1, time.Second, errors.New("x"))
	log.GaveUp("slack", 1, "not retryable", errors.New("x"))
	log.Succeeded("slack")
}
