package tokenstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// migrationFS holds the schema migrations, named NNNN_what.sql and numbered
// from 0001 without gaps. Migration N takes PRAGMA user_version from N-1 to
// N. A shipped migration is never edited: add a new one.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded migrations in order.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql") // sorted
	if err != nil {
		return nil, err
	}
	migrations := make([]migration, 0, len(names))
	for i, name := range names {
		base := path.Base(name)
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || len(num) != 4 || v != i+1 {
			return nil, fmt.Errorf("migration %s: want a name starting with %04d_", base, i+1)
		}
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", base, err)
		}
		migrations = append(migrations, migration{version: v, name: base, sql: string(b)})
	}
	return migrations, nil
}

// migrate brings the schema up to the newest embedded migration. Several
// processes may open a new file at once: each migration runs in its own
// BEGIN IMMEDIATE transaction and re-reads user_version under that lock, so
// it is applied exactly once. A schema newer than this build knows is refused.
func migrate(ctx context.Context, db *sql.DB) error {
	migrations, err := loadMigrations()
	if err != nil {
		return err
	}
	latest := len(migrations)
	if err := checkSchemaVersion(ctx, db, latest); err != nil {
		return err
	}
	for _, m := range migrations {
		if err := applyMigration(ctx, db, m); err != nil {
			return fmt.Errorf("applying migration %s: %w", m.name, err)
		}
	}
	// Another process with a newer build may have migrated further meanwhile.
	return checkSchemaVersion(ctx, db, latest)
}

func checkSchemaVersion(ctx context.Context, db *sql.DB, latest int) error {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if v > latest {
		return fmt.Errorf("%w: schema version %d, this build knows up to %d", ErrSchemaNewer, v, latest)
	}
	return nil
}

// applyMigration runs m unless the schema already has it.
func applyMigration(ctx context.Context, db *sql.DB, m migration) error {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: see the writer's DSN
	if err != nil {
		return err
	}
	defer tx.Rollback()

	var v int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if v >= m.version {
		return nil
	}
	if v != m.version-1 {
		return fmt.Errorf("schema version is %d, want %d", v, m.version-1)
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if err := setSchemaVersion(ctx, tx, m.version); err != nil {
		return err
	}
	return tx.Commit()
}

// setSchemaVersion sets PRAGMA user_version. A PRAGMA takes no bound
// parameters, so this is the one statement built at run time; v is a number
// from an embedded file name, never input.
func setSchemaVersion(ctx context.Context, tx *sql.Tx, v int) error {
	if _, err := tx.ExecContext(ctx, `PRAGMA user_version = `+strconv.Itoa(v)); err != nil {
		return fmt.Errorf("setting schema version: %w", err)
	}
	return nil
}
