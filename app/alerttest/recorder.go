package alerttest

import (
	"context"
	"sync"

	"github.com/verifier/controlplane/app/fleet"
)

// Recorder is an alert.Sender that keeps every notification it is given.
type Recorder struct {
	mu   sync.Mutex
	sent []fleet.Notification
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// Name returns "recorder".
func (r *Recorder) Name() string { return "recorder" }

// Send records n.
func (r *Recorder) Send(_ context.Context, n fleet.Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, n)
	return nil
}

// All returns every recorded notification, oldest first.
func (r *Recorder) All() []fleet.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]fleet.Notification(nil), r.sent...)
}

// Firing counts the firing notifications of fingerprint fp.
func (r *Recorder) Firing(fp string) int {
	n := 0
	for _, sent := range r.All() {
		n += count(sent.Firing, fp)
	}
	return n
}

// Resolved counts the resolved notifications of fingerprint fp.
func (r *Recorder) Resolved(fp string) int {
	n := 0
	for _, sent := range r.All() {
		n += count(sent.Resolved, fp)
	}
	return n
}

// Rule counts the firing and resolved notifications of rule, across
// subjects.
func (r *Recorder) Rule(rule fleet.Rule) (firing, resolved int) {
	for _, sent := range r.All() {
		for _, a := range sent.Firing {
			if a.Rule == rule {
				firing++
			}
		}
		for _, a := range sent.Resolved {
			if a.Rule == rule {
				resolved++
			}
		}
	}
	return firing, resolved
}

// Titles returns the title of every recorded notification, for failure
// messages.
func (r *Recorder) Titles() []string {
	var titles []string
	for _, n := range r.All() {
		titles = append(titles, n.Title())
	}
	return titles
}

func count(alerts []fleet.Alert, fp string) int {
	n := 0
	for _, a := range alerts {
		if a.Fingerprint == fp {
			n++
		}
	}
	return n
}
