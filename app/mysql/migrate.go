package mysql

import (
	"embed"
	"errors"
	"fmt"
	"log/slog"

	"github.com/go-sql-driver/mysql"
	"github.com/golang-migrate/migrate/v4"
	migratemysql "github.com/golang-migrate/migrate/v4/database/mysql"
	"github.com/golang-migrate/migrate/v4/source/iofs"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateUp applies every embedded migration that the database lacks.
//
// Several replicas may start at once. golang-migrate's mysql driver (v4.20.1)
// holds GET_LOCK on one connection from before it reads the schema version
// until the last migration is applied, so only one process migrates and
// the others then find nothing to do. GET_LOCK waits at most 10 s. A
// migration that runs longer makes a concurrent Open fail with "can't
// acquire lock", and a restart then finds the schema up to date.
func migrateUp(cfg *mysql.Config, logger *slog.Logger) error {
	// golang-migrate sends each migration file as one query, which needs
	// multiStatements. The service's own pool keeps it off.
	mcfg := cfg.Clone()
	mcfg.MultiStatements = true
	db, err := openPool(mcfg)
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)

	driver, err := migratemysql.WithInstance(db, &migratemysql.Config{DatabaseName: cfg.DBName})
	if err != nil {
		db.Close()
		return fmt.Errorf("migrate database %s: %w", cfg.DBName, err)
	}
	source, err := iofs.New(migrationFiles, "migrations")
	if err != nil {
		driver.Close()
		return fmt.Errorf("read embedded migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", source, "mysql", driver)
	if err != nil {
		source.Close()
		driver.Close()
		return fmt.Errorf("migrate database %s: %w", cfg.DBName, err)
	}
	// Closing m closes the driver, which closes db.
	defer m.Close()

	err = m.Up()
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		var dirty migrate.ErrDirty
		if errors.As(err, &dirty) {
			return fmt.Errorf("migrate database %s: migration %d failed part way and left the schema dirty; repair it by hand, then set the version with `migrate force`", cfg.DBName, dirty.Version)
		}
		return fmt.Errorf("migrate database %s: %w", cfg.DBName, err)
	}

	version, _, verr := m.Version()
	if verr != nil {
		return fmt.Errorf("read schema version of %s: %w", cfg.DBName, verr)
	}
	if errors.Is(err, migrate.ErrNoChange) {
		logger.Debug("mysql schema up to date", "database", cfg.DBName, "version", version)
	} else {
		logger.Info("mysql schema migrated", "database", cfg.DBName, "version", version)
	}
	return nil
}
