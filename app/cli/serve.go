package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/fleet"
	"github.com/verifier/controlplane/app/metrics"
	"github.com/verifier/controlplane/app/redis"
	"github.com/verifier/controlplane/app/service"
	"github.com/verifier/controlplane/app/web"
	"github.com/verifier/controlplane/static"
)

// shutdownTimeout bounds how long in-flight requests may take to finish.
const shutdownTimeout = 10 * time.Second

// Serve runs the control plane until ctx ends, then shuts down in order:
// readiness off, HTTP server drained, loops stopped, Redis closed.
func Serve(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := newLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel)

	rdb, stopEmbedded, err := openRedis(cfg, log)
	if err != nil {
		return err
	}
	defer stopEmbedded()
	defer rdb.Close()

	store := redis.New(rdb, redis.Options{WorkerTTL: cfg.WorkerRetention, Timeout: cfg.RedisTimeout})
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	settings := func() fleet.Settings { return settingsFromConfig(cfg) }
	svc := service.New(store, settings, service.Options{
		HeartbeatInterval: cfg.HeartbeatInterval,
		MaxDesiredCount:   cfg.MaxDesiredCount,
	}, m, time.Now, log)
	reg.MustRegister(metrics.NewFleetCollector(svc.Pools, cfg.MetricsMaxPools, 2*cfg.RedisTimeout))

	assets, err := static.New()
	if err != nil {
		return fmt.Errorf("load embedded assets: %w", err)
	}
	ui := web.NewUI(svc, assets, cfg.Token)
	hub := web.NewHub(ui, rdb, web.HubOptions{}, m, log)
	ui.SetHub(hub)

	srv := web.New(web.Deps{
		Service: svc, Store: store, Metrics: m, Gatherer: reg, Token: cfg.Token, Log: log,
		RetryAfter: int(cfg.HeartbeatInterval / time.Second), UI: ui,
	})

	loops, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()
	hubDone := make(chan struct{})
	go func() { hub.Run(loops); close(hubDone) }()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	announce(stdout, log, cfg, ln.Addr())

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.App().Listener(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down: readiness off")
	srv.StartDraining()
	// End the event streams first: they would hold the HTTP server open,
	// and their clients reconnect to another replica.
	stopLoops()
	<-hubDone
	log.Info("event streams closed")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.Canceled) {
		log.Warn("http server did not drain in time", "timeout", shutdownTimeout, "err", err)
	}
	log.Info("http server stopped")
	return nil
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
