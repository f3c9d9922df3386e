package alerttest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/verifier/controlplane/app/cli"
	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	replicaToken = "replica-test-token-0123456789"
	replicaGrace = 2 * time.Second
	// checkInterval is the replicas' alert check interval.
	checkInterval = time.Second
	// defaultLockTTL is the scheduler lock's expiry, which cli.Start does
	// not let a caller change.
	defaultLockTTL = 15 * time.Second
)

// replicaSet is several replicas of the control plane on one Redis, with
// one Slack webhook and one SMTP server.
type replicaSet struct {
	t       *testing.T
	env     map[string]string
	apps    []*cli.App
	stopped []bool
	hook    *SlackServer
	mailbox *SMTPServer
	http    *http.Client
}

func startReplicas(t *testing.T, n int) *replicaSet {
	t.Helper()
	addr, db, _ := testenv.Redis(t)
	s := &replicaSet{
		t:       t,
		hook:    StartSlack(t, time.Now, nil),
		mailbox: StartSMTP(t, time.Now),
		http:    &http.Client{Timeout: 10 * time.Second},
	}
	s.env = map[string]string{
		"HTTP_ADDR":                     "127.0.0.1:0",
		"CONTROL_PLANE_TOKEN":           replicaToken,
		"REDIS_ADDR":                    addr,
		"REDIS_DB":                      strconv.Itoa(db),
		"ALERTS_ENABLED":                "true",
		"ALERT_CHECK_INTERVAL_SECONDS":  strconv.Itoa(int(checkInterval / time.Second)),
		"HEARTBEAT_INTERVAL_SECONDS":    "1",
		"ALERT_HEARTBEAT_GRACE_SECONDS": strconv.Itoa(int(replicaGrace / time.Second)),
		"SLACK_WEBHOOK_URL":             s.hook.URL,
		"SMTP_HOST":                     s.mailbox.Host,
		"SMTP_PORT":                     s.mailbox.Port,
		"SMTP_FROM":                     "control-plane@example.com",
		"SMTP_TO":                       "oncall@example.com,lead@example.com",
		"SMTP_TLS":                      "none",
	}
	cfg, err := config.Load(func(k string) string { return s.env[k] })
	if err != nil {
		t.Fatalf("load config: %v", err)
	}
	for i := range n {
		log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", i)
		app, err := cli.Start(cfg, log)
		if err != nil {
			t.Fatalf("start replica %d: %v", i, err)
		}
		s.apps, s.stopped = append(s.apps, app), append(s.stopped, false)
	}
	t.Cleanup(func() {
		for i := range s.apps {
			s.stop(i)
		}
	})
	return s
}

func (s *replicaSet) stop(i int) {
	if !s.stopped[i] {
		s.stopped[i] = true
		s.apps[i].Shutdown(context.Background())
	}
}

// leader returns the index of the one replica whose scheduler leads, or -1.
func (s *replicaSet) leader() int {
	found := -1
	for i, app := range s.apps {
		if s.stopped[i] || !app.Scheduler.Leader() {
			continue
		}
		if found >= 0 {
			s.t.Errorf("replicas %d and %d both lead", found, i)
		}
		found = i
	}
	return found
}

func (s *replicaSet) heartbeat(replica int, id string) {
	s.t.Helper()
	body := fmt.Sprintf(`{"id":%q,"pool":"billing","status":"running","metrics":{"jobs_processed":1200,"jobs_failed":12,"memory_mb":256}}`, id)
	req, err := http.NewRequest(http.MethodPost, s.apps[replica].URL()+"/api/workers/heartbeat", strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+replicaToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := s.http.Do(req)
	if err != nil {
		s.t.Fatalf("heartbeat of %s: %v", id, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		s.t.Fatalf("heartbeat of %s: status %d", id, res.StatusCode)
	}
}

// loadOverview sends n concurrent GETs of the overview page with Basic
// auth, spread over the replicas, and fails the test on any status but 200.
func (s *replicaSet) loadOverview(n int) {
	s.t.Helper()
	var wg sync.WaitGroup
	statuses := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest(http.MethodGet, s.apps[i%len(s.apps)].URL()+"/verifier-engine-room/overview", nil)
			if err != nil {
				statuses <- err.Error()
				return
			}
			req.SetBasicAuth("oncall", replicaToken)
			res, err := s.http.Do(req)
			if err != nil {
				statuses <- err.Error()
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				statuses <- fmt.Sprintf("status %d", res.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(statuses)
	for status := range statuses {
		s.t.Errorf("GET overview: %s", status)
	}
}

// sentFor counts the Slack posts and the emails that mention text.
func (s *replicaSet) sentFor(text string) (posts, emails int) {
	for _, p := range s.hook.Posts() {
		if strings.Contains(p.Text, text) || strings.Contains(strings.Join(p.Sections, "\n"), text) {
			posts++
		}
	}
	for _, m := range s.mailbox.Messages() {
		if strings.Contains(m.Subject, text) || strings.Contains(m.Text, text) {
			emails++
		}
	}
	return posts, emails
}

// TestTwoReplicasNotifyOnce stops w-01's heartbeats while two replicas run
// on one Redis and twenty dashboard loads arrive at once, then stops the
// replica that runs the checks.
func TestTwoReplicasNotifyOnce(t *testing.T) {
	s := startReplicas(t, 2)
	for range 3 {
		s.heartbeat(0, "w-01")
		time.Sleep(300 * time.Millisecond)
	}
	last := time.Now()

	time.Sleep(time.Until(last.Add(replicaGrace + time.Second)))
	s.loadOverview(20)

	// Grace plus a few check intervals: the firing notification is out.
	deadline := time.Now().Add(5 * checkInterval)
	for {
		if posts, emails := s.sentFor("w-01"); posts >= 1 && emails >= 1 {
			break
		}
		if time.Now().After(deadline) {
			posts, emails := s.sentFor("w-01")
			t.Fatalf("%s after w-01's last heartbeat: %d Slack posts and %d emails about it, want 1 and 1", time.Since(last).Round(time.Second), posts, emails)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * checkInterval)
	if posts, emails := s.sentFor("w-01"); posts != 1 || emails != 1 {
		t.Errorf("within the cooldown: %d Slack posts and %d emails about w-01, want 1 and 1", posts, emails)
	}
	mail := s.mailbox.Messages()[0]
	if mail.Subject != "[FIRING] w-01 missed heartbeats" || len(mail.To) != 2 {
		t.Errorf("email subject %q to %v, want the firing of w-01 to two recipients", mail.Subject, mail.To)
	}

	// The leader stops, and the other replica takes the checks over.
	old := s.leader()
	if old < 0 {
		t.Fatal("no replica leads")
	}
	stopped := time.Now()
	s.stop(old)
	next := 1 - old
	for !s.apps[next].Scheduler.Leader() {
		if time.Since(stopped) > defaultLockTTL {
			t.Fatalf("replica %d did not take over within the lock expiry of %s", next, defaultLockTTL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("replica %d took over %s after replica %d stopped", next, time.Since(stopped).Round(100*time.Millisecond), old)

	time.Sleep(3 * checkInterval)
	if posts, emails := s.sentFor("w-01"); posts != 1 || emails != 1 {
		t.Errorf("after the takeover: %d Slack posts and %d emails about w-01, want 1 and 1", posts, emails)
	}
}
