package cli

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/verifier/controlplane/app/config"
	"github.com/verifier/controlplane/app/embedredis"
)

// openRedis returns a universal client for the configured addresses: one
// address is a standalone server, several are Cluster seeds, or Sentinels
// when a master name is set. With no address it starts miniredis in process,
// which keeps nothing across restarts; stop must be called on shutdown.
func openRedis(cfg config.Config, log *slog.Logger) (client goredis.UniversalClient, stop func(), err error) {
	addrs := cfg.RedisAddrs
	stop = func() {}
	if len(addrs) == 0 {
		mr := miniredis.NewMiniRedis()
		// It listens on a loopback port: a random password keeps other
		// local processes from changing state behind the token's back.
		password := config.NewToken()
		mr.RequireAuth(password)
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return nil, nil, fmt.Errorf("start embedded redis: %w", err)
		}
		log.Warn("REDIS_ADDR is not set: using an embedded in-process Redis; state is not durable and is lost on restart")
		addrs = []string{mr.Addr()}
		cfg.RedisPassword = password
		stopClock := embedredis.ExpireOnWallClock(mr)
		stop = func() {
			stopClock()
			mr.Close()
		}
	}
	client = goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:         addrs,
		Password:      cfg.RedisPassword,
		DB:            cfg.RedisDB,
		MasterName:    cfg.RedisMasterName,
		IsClusterMode: cfg.RedisCluster,
		PoolSize:      cfg.RedisPoolSize,
		// Every call is bounded so a stalled Redis fails fast instead of
		// piling up requests; go-redis also stops dialling after PoolSize
		// failed dials in a row and retries in the background.
		DialTimeout:           time.Second,
		ReadTimeout:           cfg.RedisTimeout,
		WriteTimeout:          cfg.RedisTimeout,
		PoolTimeout:           cfg.RedisTimeout,
		ContextTimeoutEnabled: true,
		// No automatic retries: a heartbeat that fails is retried by the
		// worker after Retry-After, which keeps the load bounded.
		MaxRetries: -1,
	})
	return client, stop, nil
}

// redisLog sends go-redis' own messages (failed dials, pool trouble) to
// slog, once per distinct message a minute: during an outage go-redis
// would otherwise write one line to stderr per request.
type redisLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[string]time.Time
}

// Printf implements go-redis' logger interface.
func (l *redisLog) Printf(ctx context.Context, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	now := time.Now()
	l.mu.Lock()
	last, ok := l.seen[msg]
	if !ok || now.Sub(last) >= time.Minute {
		l.seen[msg] = now
	}
	if len(l.seen) > 1000 {
		clear(l.seen) // messages carry addresses; keep the map bounded
	}
	l.mu.Unlock()
	if !ok || now.Sub(last) >= time.Minute {
		l.log.WarnContext(ctx, "redis client", "message", msg)
	}
}

// routeRedisLog sends go-redis' messages to log. go-redis keeps its logger
// in a package variable, so the last call wins for the whole process.
func routeRedisLog(log *slog.Logger) {
	goredis.SetLogger(&redisLog{log: log, seen: map[string]time.Time{}})
}
