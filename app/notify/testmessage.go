package notify

import (
	"context"
	"fmt"
	"time"

	"github.com/verifier/controlplane/app/fleet"
)

// TestTitle is the title of the message that Test sends.
const TestTitle = "[TEST] control plane notification test"

// RuleTest is the rule of the single alert in a test notification. No alert
// check produces it.
const RuleTest fleet.Rule = "notification_test"

// TestNotification returns the notification that Test sends: one firing
// alert of RuleTest, started at now, whose summary marks it as a test.
//
// NOTE: fleet.Notification has no field that marks a test, so channels
// recognise one by its rule through IsTest and title it with Title.
func TestNotification(now time.Time) fleet.Notification {
	return fleet.Notification{Firing: []fleet.Alert{{
		Fingerprint: string(RuleTest) + "/fleet",
		Rule:        RuleTest,
		Status:      fleet.AlertFiring,
		Summary:     "This is a test message sent from the Settings page; no action is needed.",
		StartsAt:    now,
	}}}
}

// IsTest reports whether n is a test notification from TestNotification.
func IsTest(n fleet.Notification) bool {
	return len(n.Firing) == 1 && len(n.Resolved) == 0 && n.Firing[0].Rule == RuleTest
}

// Title returns the subject line of n: TestTitle for a test notification,
// else n.Title(), on one line.
func Title(n fleet.Notification) string {
	if IsTest(n) {
		return TestTitle
	}
	return OneLine(n.Title())
}

// Test sends a test notification through notifier once, without retrying,
// so that the Settings page can show the result at once. The error names the
// channel and the failure.
func Test(ctx context.Context, notifier Notifier) error {
	if _, err := notifier.Notify(ctx, TestNotification(time.Now())); err != nil {
		return fmt.Errorf("send test notification to %s: %w", notifier.Name(), err)
	}
	return nil
}
