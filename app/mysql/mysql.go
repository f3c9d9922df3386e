// Package mysql stores the fleet's history in MySQL or MariaDB: periodic
// snapshots of pools and workers, the audit log, and the chart series read
// from them. Live state is in Redis; nothing here is on the heartbeat path.
//
// Every time is written and read as UTC. Open forces the driver's location
// and the session time zone to UTC, so neither the host's TZ nor the server's
// default zone can shift a stored instant.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DB is a connection pool to the history database. It is safe for
// concurrent use.
type DB struct {
	db     *sql.DB
	logger *slog.Logger
	now    func() time.Time
}

// Connection pool limits.
const (
	// maxConnLifetime caps how long a connection lives even when the
	// server's wait_timeout is long, so that fail-overs and load balancers
	// see connections move within minutes.
	maxConnLifetime = 3 * time.Minute
	// minConnLifetime keeps a tiny wait_timeout from making every query dial.
	minConnLifetime = time.Second
	maxOpenConns    = 10
)

// Open connects to the database named by dsn, which has the form
// user:pass@tcp(host:3306)/db[?param=value...], pings it, and applies the
// embedded migrations.
//
// Whatever the DSN says, Open sets parseTime=true, loc=UTC and the session
// time_zone to '+00:00'. It keeps connections for at most half the server's
// wait_timeout (and at most 3 minutes), so the pool drops an idle
// connection before the server closes it. A nil logger discards logs.
func Open(ctx context.Context, dsn string, logger *slog.Logger) (*DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	cfg, err := parseDSN(dsn, logger)
	if err != nil {
		return nil, err
	}

	db, err := openPool(cfg)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxOpenConns)

	waitTimeout, err := readWaitTimeout(ctx, db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to MySQL at %s/%s: %w", cfg.Addr, cfg.DBName, err)
	}
	lifetime := connLifetime(waitTimeout)
	db.SetConnMaxLifetime(lifetime)
	db.SetConnMaxIdleTime(lifetime)

	if err := migrateUp(cfg, logger); err != nil {
		db.Close()
		return nil, err
	}

	logger.Info("mysql connected",
		"addr", cfg.Addr, "database", cfg.DBName,
		"wait_timeout", waitTimeout, "conn_max_lifetime", lifetime)
	return &DB{db: db, logger: logger, now: time.Now}, nil
}

// parseDSN parses dsn and overrides the settings that keep times in UTC.
func parseDSN(dsn string, logger *slog.Logger) (*mysql.Config, error) {
	const form = "user:pass@tcp(host:3306)/db"
	if strings.TrimSpace(dsn) == "" {
		return nil, fmt.Errorf("MYSQL_DSN is empty; the accepted form is %s", form)
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("invalid MYSQL_DSN: %v; the accepted form is %s", err, form)
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("invalid MYSQL_DSN: no database name after the slash; the accepted form is %s", form)
	}

	cfg.ParseTime = true
	cfg.Loc = time.UTC
	// The driver sends each param as "SET name = value" on every new
	// connection, so the value needs its SQL quotes.
	for name, value := range cfg.Params {
		if strings.EqualFold(name, "time_zone") {
			if value != "'+00:00'" {
				logger.Warn("MYSQL_DSN sets time_zone; using '+00:00' so that stored times are UTC", "time_zone", value)
			}
			delete(cfg.Params, name)
		}
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	cfg.Logger = driverLogger{logger}
	return cfg, nil
}

// openPool returns a connection pool for cfg without connecting.
func openPool(cfg *mysql.Config) (*sql.DB, error) {
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("invalid MYSQL_DSN: %w", err)
	}
	return sql.OpenDB(connector), nil
}

// readWaitTimeout returns the session's wait_timeout: how long the server
// keeps an idle connection open.
func readWaitTimeout(ctx context.Context, db *sql.DB) (time.Duration, error) {
	var seconds int64
	if err := db.QueryRowContext(ctx, "SELECT @@session.wait_timeout").Scan(&seconds); err != nil {
		return 0, fmt.Errorf("read wait_timeout: %w", err)
	}
	return time.Duration(seconds) * time.Second, nil
}

// connLifetime returns how long a pooled connection may live and idle: half
// the server's wait_timeout, within [minConnLifetime, maxConnLifetime].
func connLifetime(waitTimeout time.Duration) time.Duration {
	return min(max(waitTimeout/2, minConnLifetime), maxConnLifetime)
}

// Close closes every connection in the pool.
func (d *DB) Close() error {
	return d.db.Close()
}

// Ping checks that the database is reachable.
func (d *DB) Ping(ctx context.Context) error {
	if err := d.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping mysql: %w", err)
	}
	return nil
}

// driverLogger sends the driver's messages, such as "closing bad idle
// connection", to slog instead of stderr.
type driverLogger struct{ logger *slog.Logger }

func (l driverLogger) Print(v ...any) {
	l.logger.Warn("mysql driver", "message", strings.TrimSpace(fmt.Sprint(v...)))
}

// isDuplicateKey reports whether err is MySQL's ER_DUP_ENTRY (1062).
func isDuplicateKey(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}
