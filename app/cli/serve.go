package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/alert"
	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/history"
	"github.com/verifier/controlplane/app/metrics"
	"github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/scheduler"
	"github.com/verifier/controlplane/app/service"
	"github.com/verifier/controlplane/app/settings"
	"github.com/verifier/controlplane/app/web"
	"github.com/verifier/controlplane/static"
)

// shutdownTimeout bounds how long in-flight requests may take to finish.
const shutdownTimeout = 10 * time.Second

// Serve runs the control plane until ctx ends, then shuts it down.
func Serve(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := newLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	routeRedisLog(log)

	app, err := Start(cfg, log)
	if err != nil {
		return err
	}
	announce(stdout, log, cfg, app.Addr())

	select {
	case err := <-app.serveErr:
		app.Shutdown(context.Background())
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	app.Shutdown(context.Background())
	return nil
}

// App is one running replica of the control plane.
type App struct {
	Config   config.Config
	Service  *service.Service
	Store    *redis.Store
	Redis    goredis.UniversalClient
	Server   *web.Server
	Hub      *web.Hub
	Metrics  *metrics.Metrics
	Registry *prometheus.Registry
	Settings *settings.Runtime
	Alerts   *alert.Engine
	// Scheduler runs the periodic jobs while this replica holds the lock.
	Scheduler *scheduler.Scheduler
	Channels  Channels
	// History is nil without MYSQL_DSN.
	History   *history.Conn
	auditSink *history.AuditSink
	dispatch  *alert.Dispatcher

	log          *slog.Logger
	ln           net.Listener
	serveErr     chan error
	stopLoops    context.CancelFunc
	loopsDone    chan struct{}
	stopEmbedded func()
}

// Start builds every dependency, listens on cfg.HTTPAddr and starts the
// background loops. Shutdown stops them.
func Start(cfg config.Config, log *slog.Logger) (*App, error) {
	rdb, stopEmbedded, err := openRedis(cfg, log)
	if err != nil {
		return nil, err
	}
	a := &App{Config: cfg, Redis: rdb, log: log, stopEmbedded: stopEmbedded, serveErr: make(chan error, 1)}

	a.Store = redis.New(rdb, redis.Options{WorkerTTL: cfg.WorkerRetention, Timeout: cfg.RedisTimeout})
	a.Registry = prometheus.NewRegistry()
	a.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.Metrics = metrics.New(a.Registry)

	a.Settings = settings.New(settingsFromConfig(cfg), cfg.HeartbeatInterval, a.Store)
	if err := a.Settings.Reload(context.Background()); err != nil {
		log.Warn("runtime settings not loaded; the environment's values are in force until the next reload", "err", err)
	}
	a.Service = service.New(a.Store, a.Settings.Current, service.Options{
		HeartbeatInterval: cfg.HeartbeatInterval,
		MaxDesiredCount:   cfg.MaxDesiredCount,
	}, a.Metrics, time.Now, log)
	a.Registry.MustRegister(metrics.NewFleetCollector(a.Service.Pools, cfg.MetricsMaxPools, 2*cfg.RedisTimeout))

	a.Channels, err = newChannels(cfg, a.Registry, log)
	if err != nil {
		a.close()
		return nil, err
	}
	if cfg.Alerts.Enabled && len(a.Channels.Senders) == 0 {
		log.Warn("ALERTS_ENABLED is true but no channel is configured: set SLACK_WEBHOOK_URL or SMTP_HOST, SMTP_FROM and SMTP_TO, or nothing is sent")
	}
	a.dispatch = alert.NewDispatcher(a.Channels.Senders, log)
	a.Alerts = alert.NewEngine(a.Store, a.Service, a.Settings.Current, a.dispatch, alert.Options{
		HeartbeatInterval: cfg.HeartbeatInterval, WorkerRetention: cfg.WorkerRetention, PublicURL: cfg.PublicURL,
	}, time.Now, log)
	jobs := []scheduler.Job{
		{Name: "alert check", Every: func() time.Duration { return a.Settings.Current().CheckInterval }, Run: a.Alerts.Check},
		{Name: "housekeeping", Every: func() time.Duration { return time.Minute }, Run: a.Alerts.Housekeep},
	}
	if cfg.MySQLDSN != "" {
		hm := history.NewMetrics(a.Registry)
		a.History = history.NewConn(cfg.MySQLDSN, hm, log)
		if err := a.History.Connect(context.Background()); err != nil {
			log.Error("history cannot connect to MySQL at start; retrying in the background, history is off meanwhile", "err", err)
		}
		a.auditSink = history.NewAuditSink(a.History, hm, log)
		a.Service.AddAuditSink(a.auditSink)
		snapshots := history.NewSnapshotter(a.History, a.Service, func() time.Duration { return a.Settings.Current().SnapshotInterval },
			cfg.SnapshotRetention, time.Now, hm, log)
		// The job polls every few seconds and writes once per period, so a
		// failed write is retried within its period.
		jobs = append(jobs, scheduler.Job{Name: "snapshot", Run: snapshots.Run, Every: func() time.Duration {
			return min(max(a.Settings.Current().SnapshotInterval/5, time.Second), 5*time.Second)
		}})
	}
	a.Scheduler = scheduler.New(a.Store, replicaID(), jobs, scheduler.Options{
		OnStoreDown: a.Alerts.StoreDown, OnStoreBack: a.Alerts.StoreBack,
	}, log)

	assets, err := static.New()
	if err != nil {
		a.close()
		return nil, fmt.Errorf("load embedded assets: %w", err)
	}
	ui := web.NewUI(a.Service, assets, cfg.Token)
	reloadSettings := make(chan struct{}, 1)
	a.Hub = web.NewHub(ui, rdb, a.Store.Channel(), web.HubOptions{OnSettings: func() {
		select {
		case reloadSettings <- struct{}{}:
		default: // a reload is already due
		}
	}}, a.Metrics, log)
	ui.SetHub(a.Hub)
	ui.SetAlerts(a.Alerts)
	if a.History != nil {
		ui.SetHistory(a.History)
	}
	ui.SetSettings(a.Settings, []web.NotifyChannel{
		{Name: "slack", Notifier: a.Channels.Slack, Detail: slackDetail(cfg)},
		{Name: "email", Notifier: a.Channels.Email, Detail: emailDetail(cfg)},
	})
	a.Server = web.New(web.Deps{
		Service: a.Service, Store: a.Store, Metrics: a.Metrics, Gatherer: a.Registry, Token: cfg.Token, Log: log,
		RetryAfter: int(cfg.HeartbeatInterval / time.Second), UI: ui,
	})

	a.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		a.close()
		return nil, fmt.Errorf("listen on HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	go func() { a.serveErr <- a.Server.App().Listener(a.ln) }()

	loops, stop := context.WithCancel(context.Background())
	a.stopLoops, a.loopsDone = stop, make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); a.Hub.Run(loops) }()
	go func() { defer wg.Done(); a.Settings.Run(loops, reloadSettings) }()
	go func() { defer wg.Done(); a.Scheduler.Run(loops) }()
	if a.History != nil {
		wg.Add(2)
		go func() { defer wg.Done(); a.History.Run(loops, 30*time.Second) }()
		go func() { defer wg.Done(); a.auditSink.Run(loops) }()
	}
	go func() { wg.Wait(); close(a.loopsDone) }()
	return a, nil
}

// Addr returns the address the server listens on.
func (a *App) Addr() net.Addr { return a.ln.Addr() }

// URL returns the server's base URL on the loopback interface.
func (a *App) URL() string {
	_, port, _ := net.SplitHostPort(a.ln.Addr().String())
	return "http://127.0.0.1:" + port
}

// Shutdown stops the replica in order: readiness off, event streams ended
// (their browsers reconnect elsewhere), in-flight requests finished within
// shutdownTimeout, loops stopped, Redis closed.
func (a *App) Shutdown(ctx context.Context) {
	a.log.Info("shutting down: readiness off")
	a.Server.StartDraining()
	if d := a.Config.ShutdownDelay; d > 0 {
		a.log.Info("still serving while load balancers notice", "delay", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	a.stopLoops()
	<-a.loopsDone
	a.log.Info("event streams closed, background loops stopped, scheduler lock released")
	// Give queued notifications a moment; a channel that is still retrying
	// is cut off rather than holding the shutdown.
	flushCtx, cancelFlush := context.WithTimeout(ctx, 5*time.Second)
	a.dispatch.Close(flushCtx)
	cancelFlush()

	ctx, cancel := context.WithTimeout(ctx, shutdownTimeout)
	defer cancel()
	if err := a.Server.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		a.log.Warn("http server did not drain in time", "timeout", shutdownTimeout, "err", err)
	}
	a.log.Info("http server stopped")
	a.close()
	a.log.Info("redis closed")
}

func (a *App) close() {
	a.Redis.Close()
	a.stopEmbedded()
}

// replicaID names this process in the scheduler lock and the logs.
func replicaID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), config.NewToken()[:8])
}

// announce prints where the dashboard is and, for a generated token, the
// token itself: once, on stdout, never in the log.
func announce(stdout io.Writer, log *slog.Logger, cfg config.Config, addr net.Addr) {
	_, port, _ := net.SplitHostPort(addr.String())
	base := cfg.PublicURL
	if base == "" {
		base = "http://localhost:" + port
	}
	log.Info("control plane listening", "addr", addr.String(), "dashboard", base+web.UIPrefix+"/overview")
	fmt.Fprintf(stdout, "Dashboard: %s%s/overview\n", base, web.UIPrefix)
	if cfg.TokenGenerated {
		fmt.Fprintf(stdout, "CONTROL_PLANE_TOKEN was not set; generated for this run:\n  %s\n", cfg.Token)
		fmt.Fprintln(stdout, "Log in with any username and this token as the password, or send Authorization: Bearer <token>.")
	}
}

func settingsFromConfig(cfg config.Config) fleet.Settings {
	return fleet.Settings{
		AlertsEnabled:      cfg.Alerts.Enabled,
		AutoActionsEnabled: cfg.Alerts.AutoActions,
		CheckInterval:      cfg.Alerts.CheckInterval,
		HeartbeatGrace:     cfg.Alerts.HeartbeatGrace,
		Cooldown:           cfg.Alerts.Cooldown,
		ErrorRateThreshold: cfg.Alerts.ErrorRateThreshold,
		MinJobs:            cfg.Alerts.MinJobs,
		SnapshotInterval:   cfg.SnapshotInterval,
	}
}
