package web

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/gofiber/fiber/v2"

	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/notify"
	"github.com/verifier/controlplane/app/settings"
	"github.com/verifier/controlplane/views"
)

// NotifyChannel is a notification channel the Settings page can test.
type NotifyChannel struct {
	Name string // "slack" or "email", also the test route's parameter
	// Notifier is nil when the channel is not configured.
	Notifier notify.Notifier
	// Detail describes the configuration with secrets masked.
	Detail string
}

func (u *UI) alertsData(ctx context.Context) (views.AlertsData, error) {
	p, err := u.alerts.PageData(ctx)
	d := views.AlertsData{Firing: p.Firing, Pending: p.Pending, Resolved: p.Resolved, Silences: p.Silences, Now: p.Now}
	if u.settings != nil {
		d.Enabled = u.settings.Current().AlertsEnabled
	}
	d.NoChannel = true
	for _, ch := range u.channels {
		if ch.Notifier != nil {
			d.NoChannel = false
		}
	}
	return d, err
}

// alertsFragment renders the live part of the Alerts page.
func (u *UI) alertsFragment(ctx context.Context) templ.Component {
	d, err := u.alertsData(ctx)
	if err != nil {
		return views.StoreStatus(true)
	}
	return views.AlertsPanel(d)
}

func (u *UI) handleAlerts(c *fiber.Ctx) error {
	if u.alerts == nil {
		return fleet.Errorf(fleet.ENOTFOUND, "", "alerting is not wired on this server")
	}
	d, err := u.alertsData(c.UserContext())
	if err != nil {
		return err
	}
	return render(c, fiber.StatusOK, views.AlertsPage(u.page("Alerts", "alerts", UIPrefix+"/events?view=alerts"), d))
}

// handleSilence silences an alert, a worker or a pool for a duration.
func (u *UI) handleSilence(c *fiber.Ctx) error {
	d, err := time.ParseDuration(c.FormValue("duration"))
	if err != nil {
		return fleet.Errorf(fleet.EINVALID, "duration", "duration must be a Go duration such as 1h or 30m")
	}
	sl := fleet.Silence{Matcher: c.FormValue("matcher"), Reason: strings.TrimSpace(c.FormValue("reason")), Until: time.Now().Add(d)}
	switch sl.Matcher {
	case "alert":
		sl.Value = c.FormValue("fingerprint")
	case "worker":
		sl.Value = c.FormValue("worker")
	case "pool":
		sl.Value = c.FormValue("pool")
	}
	who, source := actor(c)
	if _, err := u.alerts.Silence(c.UserContext(), sl, who, source); err != nil {
		return err
	}
	return render(c, fiber.StatusOK, u.alertsFragment(c.UserContext()))
}

func (u *UI) handleLiftSilence(c *fiber.Ctx) error {
	who, source := actor(c)
	if err := u.alerts.Unsilence(c.UserContext(), c.Params("id"), who, source); err != nil {
		return err
	}
	return render(c, fiber.StatusOK, u.alertsFragment(c.UserContext()))
}

// settingsData builds the form from the settings in force; errs holds
// inline errors by field name.
func (u *UI) settingsData(errs map[string]string, form map[string]string) views.SettingsData {
	cur := u.settings.Current()
	d := views.SettingsData{}
	for _, f := range settings.Fields {
		v := settings.Value(cur, f.Name)
		if form != nil && errs[f.Name] != "" {
			v = form[f.Name] // show what was typed next to its error
		}
		d.Fields = append(d.Fields, views.SettingField{
			Name: f.Name, Label: f.Label, Help: f.Help, Kind: f.Kind, Value: v, Env: f.Env,
			Shown:      settings.Value(cur, f.Name),
			Overridden: u.settings.Overridden(f.Name), Error: errs[f.Name],
		})
	}
	for _, ch := range u.channels {
		d.Channels = append(d.Channels, views.Channel{Name: ch.Name, Configured: ch.Notifier != nil, Detail: ch.Detail})
	}
	return d
}

func (u *UI) handleSettings(c *fiber.Ctx) error {
	if u.settings == nil {
		return fleet.Errorf(fleet.ENOTFOUND, "", "settings are not wired on this server")
	}
	return render(c, fiber.StatusOK, views.SettingsPage(u.page("Settings", "settings", ""), u.settingsData(nil, nil)))
}

// handleSaveSettings validates and stores the form; invalid fields come
// back inline and nothing is stored.
func (u *UI) handleSaveSettings(c *fiber.Ctx) error {
	// An unchecked checkbox sends nothing, which Save reads as false.
	form := map[string]string{}
	for _, f := range settings.Fields {
		for _, key := range []string{f.Name, settings.ShownPrefix + f.Name} {
			if c.Request().PostArgs().Has(key) {
				form[key] = c.FormValue(key)
			}
		}
	}
	var reset []string
	if r := c.FormValue("reset"); r != "" {
		reset = []string{r}
	}
	changes, errs, err := u.settings.Save(c.UserContext(), form, reset)
	if err != nil {
		return err
	}
	if len(errs) > 0 {
		return render(c, fiber.StatusUnprocessableEntity, views.SettingsForm(u.settingsData(errs, form)))
	}

	who, source := actor(c)
	for _, ch := range changes {
		u.svc.Record(c.UserContext(), fleet.AuditEntry{
			Actor: who, Source: source, Kind: fleet.AuditSettings, Action: "set " + ch.Name, Before: ch.Before, After: ch.After,
		})
	}
	d := u.settingsData(nil, nil)
	d.Saved = fmt.Sprintf("Saved: %d settings changed.", len(changes))
	return render(c, fiber.StatusOK, views.SettingsForm(d))
}

// handleTestChannel sends a test notification and reports the outcome.
func (u *UI) handleTestChannel(c *fiber.Ctx) error {
	name := c.Params("channel")
	for _, ch := range u.channels {
		if ch.Name != name {
			continue
		}
		if ch.Notifier == nil {
			return fleet.Errorf(fleet.EINVALID, "channel", "%s is not configured; set its variables in the environment", name)
		}
		ctx, cancel := context.WithTimeout(c.UserContext(), 20*time.Second)
		defer cancel()
		if err := notify.Test(ctx, ch.Notifier); err != nil {
			return render(c, fiber.StatusOK, views.Flash("Test message to "+name+" failed: "+err.Error(), true))
		}
		who, source := actor(c)
		u.svc.Record(c.UserContext(), fleet.AuditEntry{Actor: who, Source: source, Kind: fleet.AuditNotification, Action: "test " + name})
		return render(c, fiber.StatusOK, views.Flash("Test message sent to "+name+".", false))
	}
	return fleet.Errorf(fleet.EINVALID, "channel", "channel must be slack or email")
}

// MaskURL shows a webhook's scheme and host only: its path is the secret.
func MaskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "set (unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
