package alerttest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SlackResponse is the status and header the webhook server returns for
// one post.
type SlackResponse struct {
	Status int
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
}

// SlackPost is one request the webhook server received.
type SlackPost struct {
	At     time.Time
	Status int // the status code the server returned
	Text   string
	// Sections holds the text of each block after the header.
	Sections []string
}

// SlackServer is a Slack incoming webhook on 127.0.0.1 that records every
// post.
type SlackServer struct {
	URL string

	now     func() time.Time
	respond func(i int) SlackResponse
	mu      sync.Mutex
	posts   []SlackPost
	arrived chan struct{}
}

// StartSlack starts a webhook server, which runs until the test ends.
// respond returns the response to the i-th post, counted from 0, and a nil
// respond returns 200 to every post. now stamps each post.
func StartSlack(t testing.TB, now func() time.Time, respond func(i int) SlackResponse) *SlackServer {
	t.Helper()
	if respond == nil {
		respond = func(int) SlackResponse { return SlackResponse{Status: http.StatusOK} }
	}
	s := &SlackServer{now: now, respond: respond, arrived: make(chan struct{}, 1000)}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/services/T000/B000/secret"
	return s
}

func (s *SlackServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var payload struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
			Text struct {
				Text string `json:"text"`
			} `json:"text"`
		} `json:"blocks"`
	}
	_ = json.Unmarshal(body, &payload)
	post := SlackPost{At: s.now(), Text: payload.Text}
	for _, b := range payload.Blocks {
		if b.Type != "header" {
			post.Sections = append(post.Sections, b.Text.Text)
		}
	}

	s.mu.Lock()
	res := s.respond(len(s.posts))
	post.Status = res.Status
	s.posts = append(s.posts, post)
	s.mu.Unlock()

	if res.RetryAfter != "" {
		w.Header().Set("Retry-After", res.RetryAfter)
	}
	w.WriteHeader(res.Status)
	if res.Status == http.StatusOK {
		_, _ = io.WriteString(w, "ok")
	}
	s.arrived <- struct{}{}
}

// Posts returns every post received so far.
func (s *SlackServer) Posts() []SlackPost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SlackPost(nil), s.posts...)
}

// WaitPosts waits until n posts arrived in total, or fails the test after
// timeout.
func (s *SlackServer) WaitPosts(t testing.TB, n int, timeout time.Duration) []SlackPost {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if posts := s.Posts(); len(posts) >= n {
			return posts
		}
		select {
		case <-s.arrived:
		case <-deadline:
			t.Fatalf("Slack received %d posts within %s, want %d", len(s.Posts()), timeout, n)
		}
	}
}

var moreRE = regexp.MustCompile(`and (\d+) more (firing|resolved) alerts?`)

// Alerts returns the alert sections of a post that mention text, and the
// counts of its "and N more" lines.
func (p SlackPost) Alerts(text string) (shown, more int) {
	for _, sec := range p.Sections {
		if m := moreRE.FindStringSubmatch(sec); m != nil {
			n, _ := strconv.Atoi(m[1])
			more += n
			continue
		}
		if strings.Contains(sec, "\nWhere: ") && strings.Contains(sec, text) {
			shown++
		}
	}
	return shown, more
}
